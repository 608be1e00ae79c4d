// Package endpoints knows where an Indexer connects: the production
// network's endpoints (the defaults of Config.RelayURL and Config.PLCURL),
// which URLs name a local service, and what Open logs about them.
//
// Open (package cistern) hands it the Config's URLs before and after the
// defaults are applied; it warns, once, about settings that do nothing (those
// of the default resolver beside Config.Resolver) and about a configuration
// that mixes a local network with production defaults, the mistake that
// makes an indexer follow a local relay and resolve its DIDs in production.
package endpoints

import (
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
)

// Production endpoints, the defaults of Config.RelayURL and Config.PLCURL.
const (
	DefaultRelayURL = "wss://bsky.network"
	DefaultPLCURL   = "https://plc.directory"
)

// Settings are the Config fields that say where an Indexer connects.
type Settings struct {
	RelayURL, CrawlURL, PLCURL string
	Sources                    []string
	NoFirehose, NoCrawl        bool
	// Resolver is true when Config.Resolver replaces the default
	// resolver; SkipHandleVerification is that Config field.
	Resolver, SkipHandleVerification bool
	Path                             string // "" when Config.Store is set
	Verify                           string
}

// Ignored names the settings that s sets and that do nothing: those of the
// default resolver, when Config.Resolver replaces it.
func (s Settings) Ignored() []string {
	if !s.Resolver {
		return nil
	}
	var out []string
	if s.PLCURL != "" {
		out = append(out, "PLCURL")
	}
	if s.SkipHandleVerification {
		out = append(out, "SkipHandleVerification")
	}
	return out
}

// Mixed returns a warning when s (before defaults) points one service at a
// local network (a loopback or private address, or a .test, .local,
// .localhost or .internal name) and another at production (its default):
// the indexer would then follow a local relay and resolve its DIDs at the
// production PLC directory, or the reverse. It is "" otherwise.
func (s Settings) Mixed() string {
	if s.Resolver {
		return "" // PLCURL is not used
	}
	relayUsed := !(s.NoFirehose && s.NoCrawl)
	var local string
	for _, u := range append(append([]string{s.RelayURL, s.CrawlURL}, s.Sources...), s.PLCURL) {
		if IsLocal(u) {
			local = u
			break
		}
	}
	relayProd := len(s.Sources) == 0 && s.CrawlURL == "" &&
		(s.RelayURL == "" || s.RelayURL == DefaultRelayURL)
	switch {
	case local == "":
		return ""
	case s.PLCURL == "" || s.PLCURL == DefaultPLCURL:
		return fmt.Sprintf("DIDs are resolved at the production PLC directory %s (PLCURL), while %s is a local service: set PLCURL to the network's directory", DefaultPLCURL, local)
	case relayUsed && relayProd:
		return fmt.Sprintf("the production relay %s is followed (RelayURL), while %s is a local service: set RelayURL to the network's relay (or NoFirehose and NoCrawl)", DefaultRelayURL, local)
	}
	return ""
}

// IsLocal reports whether u names a loopback or private address, or a name
// reserved for local use.
func IsLocal(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return false
	}
	host := strings.ToLower(p.Hostname())
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()
	}
	if host == "localhost" {
		return true
	}
	for _, suffix := range []string{".test", ".local", ".localhost", ".internal"} {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// Log says at Open where the Indexer will connect (applied: the settings
// with their defaults; given: as the host set them), and warns about
// settings that do nothing or that mix a local network with production
// defaults.
func Log(log *slog.Logger, given, applied Settings) {
	plc := applied.PLCURL
	switch {
	case applied.Resolver:
		plc = "(Config.Resolver)"
	case given.PLCURL == "":
		plc += " (default: production)"
	}
	sources := "(NoFirehose)"
	if !applied.NoFirehose {
		sources = strings.Join(applied.Sources, ",")
		if applied.RelayURL == DefaultRelayURL && len(applied.Sources) == 1 && applied.Sources[0] == DefaultRelayURL {
			sources += " (default: production)"
		}
	}
	crawl := applied.CrawlURL
	if applied.NoCrawl {
		crawl = "(NoCrawl)"
	}
	path := applied.Path
	if path == "" {
		path = "(Config.Store)"
	}
	log.Info("cistern: open", "path", path, "firehose", sources, "crawl", crawl, "plc", plc, "verify", applied.Verify)
	if ignored := given.Ignored(); len(ignored) > 0 {
		log.Warn("cistern: settings ignored: Config.Resolver replaces the default resolver that would use them", "settings", ignored)
	}
	if mixed := given.Mixed(); mixed != "" {
		log.Warn("cistern: " + mixed)
	}
}
