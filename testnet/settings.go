package testnet

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// ErrOutsideNetwork is wrapped by the error of a request that the client of
// IndexerSettings refuses to send: its host is not one of the network's
// servers. It usually means a URL was left to a default that points at the
// production network (such as https://plc.directory).
var ErrOutsideNetwork = errors.New("testnet: host is not part of the simulated network")

// IndexerSettings are what an indexer needs to follow this network instead
// of the production one. Package cisterntest turns them into a
// cistern.Config in one call (cisterntest.Config); a program that does not
// want that dependency copies the fields into the Config fields of the same
// names.
type IndexerSettings struct {
	// RelayURL is the relay: firehose source and crawl host.
	RelayURL string
	// PLCURL is the network's PLC directory.
	PLCURL string
	// SkipHandleVerification is true: handles under .test have no DNS
	// record and no HTTPS server to check them against, and without it
	// every handle reads handle.invalid.
	SkipHandleVerification bool
	// HTTPClient sends requests to the network's own servers (PLC, relay,
	// PDS hosts) only; any other host fails at once with an error wrapping
	// ErrOutsideNetwork, instead of a production service being dialed. It
	// has no overall timeout (firehose connections and getRepo bodies are
	// long-lived); response headers are awaited for 30 s at most.
	HTTPClient *http.Client
}

// IndexerSettings returns the settings that point an indexer at this
// network. The HTTP client shares one transport per call; it stays valid
// until the network is closed.
func (n *Network) IndexerSettings() IndexerSettings {
	allowed := make(map[string]bool)
	for _, u := range append([]string{n.plcURL, n.relayURL}, n.hostURLs()...) {
		if p, err := url.Parse(u); err == nil {
			allowed[p.Host] = true
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 30 * time.Second
	return IndexerSettings{
		RelayURL:               n.relayURL,
		PLCURL:                 n.plcURL,
		SkipHandleVerification: true,
		HTTPClient:             &http.Client{Transport: networkOnly{allowed: allowed, base: tr}},
	}
}

func (n *Network) hostURLs() []string {
	out := make([]string, len(n.hosts))
	for i, h := range n.hosts {
		out[i] = h.url
	}
	return out
}

// networkOnly refuses requests to hosts outside the network.
type networkOnly struct {
	allowed map[string]bool // host:port
	base    http.RoundTripper
}

func (t networkOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.allowed[req.URL.Host] {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("%w: refusing %s %s (is a URL left to its production default?)", ErrOutsideNetwork, req.Method, req.URL.Redacted())
	}
	return t.base.RoundTrip(req)
}
