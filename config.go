package cistern

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// VerifyMode says which commits have their signatures and proofs checked.
type VerifyMode string

// Verification modes.
const (
	// VerifyFull checks backfilled repos (signature) and every live commit
	// (signature, commit CID, rev, limits, sync 1.1 inversion). The default.
	VerifyFull VerifyMode = "full"
	// VerifyBackfill checks backfilled repos only; live commits are checked
	// for structure and limits, not signatures or proofs.
	VerifyBackfill VerifyMode = "backfill"
	// VerifyNone checks no signatures or proofs anywhere.
	VerifyNone VerifyMode = "none"
)

// ParseVerifyMode parses "full", "backfill" or "none".
func ParseVerifyMode(s string) (VerifyMode, error) {
	switch m := VerifyMode(s); m {
	case VerifyFull, VerifyBackfill, VerifyNone:
		return m, nil
	case "":
		return VerifyFull, nil
	}
	return "", fmt.Errorf("cistern: unknown verify mode %q (want full, backfill or none)", s)
}

// Config configures an Indexer. Zero values mean the documented defaults.
type Config struct {
	// Path is the bbolt file to open when Store is nil. Default "cistern.db".
	Path string
	// Store, if set, is used instead of a bbolt file at Path. The Indexer
	// does not close a Store it did not open.
	Store store.Store
	// ReadOnly serves a store that another process indexes into (a read
	// replica, on a store several processes can open, such as
	// store/pgstore): queries, Subscribe and Stats work, and Run follows
	// the store instead of the network, waking subscriptions within a
	// fraction of a second of each commit of the indexing process and
	// taking up its filter changes. Nothing is written: methods that would
	// write return ErrReadOnly, and Filter must be the zero Spec.
	ReadOnly bool

	// Filter says what is tracked, stored and emitted. When it is the zero
	// Spec the filter persisted in the store is used (nothing is tracked on
	// a new store until SetFilter or Track); otherwise it replaces the
	// persisted one at Open, with the effects of SetFilter.
	//
	// Prefer exact signals: a wildcard signal (such as "app.bsky.graph.*")
	// cannot be asked of listReposByCollection, so unless NoCrawl is set
	// its discovery crawl costs a describeRepo request per repo on the
	// network (see NoCrawl).
	Filter filter.Spec

	// RelayURL is the firehose source (a relay or a PDS), http(s) or ws(s).
	// Default "wss://bsky.network", the production network, also when the
	// other URLs point elsewhere (Open logs the URLs it uses). Set
	// NoFirehose to follow none. For an in-process testnet, see
	// cisterntest.Config.
	RelayURL string
	// Sources, when set, replaces RelayURL as the list of firehose
	// sources, each followed with its own cursor (list RelayURL in it to
	// keep it). Default: RelayURL alone.
	Sources []string
	// NoFirehose disables live sync: only backfill runs.
	NoFirehose bool
	// FirehoseWorkers is how many repos are applied in parallel per
	// source. Each worker holds at most a few messages, and the writes of
	// all workers share transactions, so more workers mean larger groups
	// per fsync. Default 128.
	FirehoseWorkers int
	// MaxHeldCommitsPerRepo and MaxHeldCommits cap the live commits held
	// for repos that are not synced yet (waiting for, or in, their
	// backfill), per repo and over every repo. Past a cap, the repo's held
	// commits are dropped and it is backfilled in full, which brings the
	// same records: nothing is lost, and a repo whose PDS stays down no
	// longer grows the store without limit. Defaults 10,000 and 1,000,000;
	// negative means no cap.
	MaxHeldCommitsPerRepo, MaxHeldCommits int
	// HostAuthority says the firehose sources are PDS hosts, not relays: a
	// live commit is then applied only when it comes from the host that
	// the repo's DID document names, so that after an account moves to
	// another PDS the old host's commits for it are ignored (a relay makes
	// this check itself). Default false.
	HostAuthority bool
	// FirehoseMaxFrameSize is the largest firehose frame read, in bytes.
	// A larger frame (the protocol's limits make valid ones smaller) is
	// skipped with an error logged and counted as a too_large rejection;
	// the repo it was for is resynced when its next commit no longer
	// chains. Default firehose.DefaultMaxFrameSize (4 MiB).
	FirehoseMaxFrameSize int64

	// PLCURL is the PLC directory for the default resolver.
	// Default "https://plc.directory", the production directory, also when
	// RelayURL points elsewhere. Ignored when Resolver is set (Open warns):
	// configure the directory on that resolver.
	PLCURL string
	// Resolver, if set, replaces the default resolver (a resolver.Cached
	// over PLCURL and HTTPClient, with SkipHandleVerification). PLCURL and
	// SkipHandleVerification then do nothing, and HTTPClient is not used
	// for identity lookups: Open logs a warning naming any of the two that
	// is set.
	Resolver resolver.Resolver
	// SkipHandleVerification turns off the bidirectional handle check of
	// the default resolver: handles are taken from DID documents as they
	// are. Without it, a handle that does not resolve back to its DID (any
	// handle of a test network under .test) reads "handle.invalid". Ignored
	// when Resolver is set (Open warns).
	SkipHandleVerification bool
	// HandleCheckConcurrency is how many handles are checked at once when
	// the resolver is a resolver.HandleChecker (the default resolver is).
	// Backfill and live sync then resolve DID documents only, and each
	// repo's handle is checked beside them (DNS, then HTTPS to the
	// handle's domain); its verdict is written on the repo's state, with an
	// identity event when it changed, once it is known. Default 32.
	HandleCheckConcurrency int
	// HTTPClient is used for PDS, relay and crawl requests, and for PLC and
	// handle lookups of the default resolver (not of a Resolver of yours).
	// Default: a client with a 30 s dial and header timeout.
	HTTPClient *http.Client

	// Verify selects what is verified. Default VerifyFull.
	Verify VerifyMode

	// Backfill tunes the backfill scheduler.
	Backfill BackfillConfig

	// Retention bounds the event log; the default keeps everything.
	Retention Retention

	// NoCrawl disables the discovery crawls that find repos which wrote
	// before cistern started: com.atproto.sync.listRepos in full-network
	// mode, and otherwise, for each signal:
	//   - an exact signal is asked of listReposByCollection, falling back
	//     to listRepos + describeRepo on a host that does not serve it (a
	//     bare PDS);
	//   - a wildcard signal walks listRepos, the whole network on a relay,
	//     and asks each repo's PDS for its collections (describeRepo, after
	//     resolving its DID): one request per repo not yet tracked, per
	//     wildcard signal. A repo whose PDS (not CrawlURL's host) fails
	//     with anything but a rate limit is skipped with a warning; its
	//     next signal write on the firehose tracks it.
	// Each crawl's cursor is persisted, so a restart resumes it; a finished
	// crawl is not repeated. A signal added later gets a crawl of its own,
	// and a signal removed and added again (or FullNetwork turned off and
	// on) is crawled again. Default: crawls run.
	NoCrawl bool
	// CrawlURL is the host the crawler enumerates. Default: the first
	// firehose source (Sources[0], or RelayURL), as http(s).
	CrawlURL string

	// CursorInterval is how often firehose cursors are saved. Default 1 s.
	CursorInterval time.Duration

	// Backlinks keeps the backlink index (package backlinks): every link a
	// stored record holds (an at-uri or a DID, with its path) is indexed in
	// the transaction that stores the record, and Indexer.Backlinks and
	// Indexer.CountBacklinks answer who links to a record or an account.
	// Turned on for a store that already holds records, Run builds the
	// index from them first (resumable; queries return a
	// *backlinks.BuildingError until it is done). Turned off, the index is
	// no longer kept: queries return backlinks.ErrOff, and turning it on
	// again rebuilds it. Default false.
	Backlinks bool

	// Logger receives the indexer's logs. Default: slog.Default()'s
	// handler, for warnings and errors only (DefaultLogLevel); pass a
	// Logger of your own to see the indexer's progress at INFO, or
	// slog.New(slog.DiscardHandler) for nothing at all.
	Logger *slog.Logger
}

// BackfillConfig tunes backfill. Zero values mean the defaults.
type BackfillConfig struct {
	// Concurrency is how many repos are fetched at once. Default 16.
	Concurrency int
	// ByteBudget bounds the memory of repos being backfilled: each is
	// charged backfill.MemoryPerCARByte (4.5) times its CAR size, for the
	// CAR and what is parsed from it. Default 512 MiB.
	ByteBudget int64
	// PerHost bounds concurrent requests to one PDS host. Default 4.
	PerHost int
	// HostInterval spaces requests to one host. Default 0.
	HostInterval time.Duration
	// MaxRepoSize refuses larger repos. Default 1 GiB.
	MaxRepoSize int64
	// FetchTimeout bounds one getRepo. Default 10 minutes.
	FetchTimeout time.Duration
	// MinBackoff and MaxBackoff bound the retry delay of a failed repo.
	// Defaults 1 minute and 1 hour.
	MinBackoff, MaxBackoff time.Duration
	// BatchSize is how many records one write transaction carries.
	// Default 1000.
	BatchSize int
	// Strategy is how repos are fetched: backfill.StrategyFull (getRepo),
	// backfill.StrategySparse (getBlocks: only the MST paths and records of
	// the stored collections) or backfill.StrategyAuto, which picks per
	// repo and falls back to getRepo on hosts without getBlocks. Default
	// auto.
	Strategy backfill.Strategy
}

// Retention bounds the event log. Zero keeps everything.
type Retention struct {
	// MaxAge prunes events older than this.
	MaxAge time.Duration
	// MaxEvents keeps at most this many of the newest events.
	MaxEvents int64
}

// ignoredSettings names the settings that c sets and that do nothing:
// those of the default resolver, when Resolver replaces it.
func (c Config) ignoredSettings() []string {
	if c.Resolver == nil {
		return nil
	}
	var out []string
	if c.PLCURL != "" {
		out = append(out, "PLCURL")
	}
	if c.SkipHandleVerification {
		out = append(out, "SkipHandleVerification")
	}
	return out
}

// Production endpoints, the defaults of RelayURL and PLCURL.
const (
	defaultRelayURL = "wss://bsky.network"
	defaultPLCURL   = "https://plc.directory"
)

// mixedNetworks returns a warning when c points one service at a local
// network (a loopback or private address, or a .test, .local, .localhost
// or .internal name) and another at production (its default): the
// indexer would then follow a local relay and resolve its DIDs at the
// production PLC directory, or the reverse. It is "" otherwise.
func (c Config) mixedNetworks() string {
	if c.Resolver != nil {
		return "" // PLCURL is not used
	}
	relayUsed := !(c.NoFirehose && c.NoCrawl)
	var local string
	for _, u := range append(append([]string{c.RelayURL, c.CrawlURL}, c.Sources...), c.PLCURL) {
		if isLocalURL(u) {
			local = u
			break
		}
	}
	relayProd := len(c.Sources) == 0 && c.CrawlURL == "" &&
		(c.RelayURL == "" || c.RelayURL == defaultRelayURL)
	switch {
	case local == "":
		return ""
	case c.PLCURL == "" || c.PLCURL == defaultPLCURL:
		return fmt.Sprintf("DIDs are resolved at the production PLC directory %s (PLCURL), while %s is a local service: set PLCURL to the network's directory", defaultPLCURL, local)
	case relayUsed && relayProd:
		return fmt.Sprintf("the production relay %s is followed (RelayURL), while %s is a local service: set RelayURL to the network's relay (or NoFirehose and NoCrawl)", defaultRelayURL, local)
	}
	return ""
}

// isLocalURL reports whether u names a loopback or private address, or a
// name reserved for local use.
func isLocalURL(u string) bool {
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

func (c Config) withDefaults() (Config, error) {
	if c.Path == "" {
		c.Path = "cistern.db"
	}
	if c.RelayURL == "" {
		c.RelayURL = defaultRelayURL
	}
	if c.PLCURL == "" {
		c.PLCURL = defaultPLCURL
	}
	if c.FirehoseWorkers <= 0 {
		c.FirehoseWorkers = 128
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	if c.CursorInterval <= 0 {
		c.CursorInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = defaultLogger()
	}
	m, err := ParseVerifyMode(string(c.Verify))
	if err != nil {
		return c, err
	}
	c.Verify = m
	if len(c.Sources) == 0 {
		c.Sources = []string{c.RelayURL}
	}
	if c.CrawlURL == "" {
		c.CrawlURL = c.Sources[0]
	}
	return c, nil
}

func defaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 30 * time.Second
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: tr}
}
