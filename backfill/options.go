package backfill

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// Writer is the write path the scheduler writes through: every change it
// makes runs inside fn, in a transaction that may be shared with other
// writers. fn may run more than once and must touch nothing but tx.
// *writer.Writer satisfies it.
type Writer interface {
	Write(ctx context.Context, fn func(tx store.Tx) error) error
}

// Options configure a Scheduler. Zero values mean the defaults given on each
// field; Store, Writer, Resolver and Filter are required.
type Options struct {
	// Store is read for repo states, stored records and the queue.
	Store store.Store
	// Writer carries every write. Required.
	Writer Writer
	// Resolver finds a repo's PDS and signing key. Required.
	Resolver resolver.Resolver
	// Filter returns the filter in force; it is called once per backfill,
	// so a filter changed at runtime applies to the next repo. Required.
	Filter func() *filter.Filter
	// HTTPClient fetches CARs. Default: a client without an overall
	// timeout (FetchTimeout bounds each fetch).
	HTTPClient *http.Client

	// Concurrency is how many repos are backfilled at once. Default 16.
	Concurrency int
	// ByteBudget bounds the memory held by repos being backfilled. Each
	// repo is charged MemoryPerCARByte times the size of its CAR (the CAR
	// itself plus its parsed blocks and tree), before its body is read
	// into memory; a repo whose charge is larger than what is left waits.
	// A repo larger than the whole budget takes all of it, alone. So the
	// heap held by backfills stays near ByteBudget, plus the charge of at
	// most one repo larger than the budget, plus the write batches
	// (BatchSize records each, per repo in flight). Default 512 MiB.
	ByteBudget int64
	// PerHost bounds concurrent requests to one PDS host. Default 4.
	PerHost int
	// HostInterval is the minimum spacing between the starts of two
	// requests to one host. Default 0: no pacing.
	HostInterval time.Duration
	// MaxRepoSize is the largest CAR accepted. A larger repo fails with
	// error kind "too_large" and is retried only after MaxBackoff.
	// Default 1 GiB.
	MaxRepoSize int64
	// FetchTimeout bounds one getRepo request, body included. Default 10
	// minutes.
	FetchTimeout time.Duration
	// TempDir is where CARs of unknown length are spooled before they are
	// admitted under the byte budget. Default os.TempDir().
	TempDir string
	// Strategy says how repos are fetched: StrategyFull (getRepo),
	// StrategySparse (getBlocks, only the stored collections) or
	// StrategyAuto, which picks per repo. Default StrategyAuto.
	Strategy Strategy
	// BlocksPerRequest is the most CIDs asked for in one getBlocks request
	// of a sparse backfill; it bounds the request's URL (about 65 bytes a
	// CID) and its answer. Default 100.
	BlocksPerRequest int

	// Verify enables verification of the commit signature against the
	// resolved signing key. Off in the zero value; the indexer turns it on
	// by default.
	Verify bool

	// MinBackoff is the wait after the first transient failure of a repo;
	// it doubles with each consecutive failure up to MaxBackoff, with
	// ±20% jitter. Defaults 1 minute and 1 hour. A repo that failed on
	// its PDS host itself (no answer, timeout, 5xx, body cut short) does
	// not wait that long once the host is back: the next request to that
	// host that succeeds (a getRepo, or a Get) makes it due at once.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// BatchSize is the number of record changes per write transaction.
	// Default 1000.
	BatchSize int

	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Logger receives one line per failed backfill. Default slog.Default().
	Logger *slog.Logger

	// CheckHandle, if set, is called (and must not block) when a repo's
	// identity was resolved without its handle (Identity.Handle empty: a
	// resolver that defers the handle check, see resolver.HandleChecker).
	// The repo keeps the handle it had, and the caller checks the handle
	// beside the backfill and writes it. Default nil.
	CheckHandle func(did string)

	// OnBackfilled, if set, is called after the final batch wrote the
	// repo's rev and data CID, while the repo is still in
	// StateBackfilling and still queued: the indexer drains the live
	// commits it buffered, then marks the repo StateSynced and dequeues
	// it. If it returns an error, the error is recorded on the repo (kind
	// "hook") and the repo is retried after a backoff. If OnBackfilled is
	// nil, the final batch itself marks the repo StateSynced and dequeues
	// it.
	OnBackfilled func(ctx context.Context, did string, rev string, data cid.Cid) error
}

// Defaults of Options.
const (
	DefaultConcurrency  = 16
	DefaultByteBudget   = 512 << 20
	DefaultPerHost      = 4
	DefaultMaxRepoSize  = 1 << 30
	DefaultFetchTimeout = 10 * time.Minute
	DefaultMinBackoff   = time.Minute
	DefaultMaxBackoff   = time.Hour
	DefaultBatchSize    = 1000
	// DefaultBlocksPerRequest keeps a getBlocks URL near 6.5 KB, under the
	// 8 KB that servers and proxies commonly accept.
	DefaultBlocksPerRequest = 100
)

func (o Options) withDefaults() Options {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ByteBudget <= 0 {
		o.ByteBudget = DefaultByteBudget
	}
	if o.PerHost <= 0 {
		o.PerHost = DefaultPerHost
	}
	if o.HostInterval < 0 {
		o.HostInterval = 0
	}
	if o.MaxRepoSize <= 0 {
		o.MaxRepoSize = DefaultMaxRepoSize
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Strategy == "" {
		o.Strategy = StrategyAuto
	}
	if o.BlocksPerRequest <= 0 {
		o.BlocksPerRequest = DefaultBlocksPerRequest
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}
