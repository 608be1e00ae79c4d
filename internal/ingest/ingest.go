// Package ingest applies the live network to the store: it follows the
// firehose sources, verifies each commit (package verify) and applies it
// through the one write path, holds the commits of repos being backfilled
// and applies them afterwards (Drain), and saves each source's cursor.
//
// A firehose message flows down: Follow reads it (package firehose) and
// dispatches it by repo; HandleMessage takes the repo's lock and reads its
// state (internal/repos), verifies it (verify), and queues its write
// (internal/writer). State changes a message asks for (a rejection, an
// account event, a discovery) are transitions of internal/repos. Nothing
// here calls back into the indexer that wires it: what it needs from above
// (the filter in force) is a function in Config.
//
// Live commits of one repo are pipelined: each is verified against the
// state the repo's queued writes leave it in (repos.Pipeline) and queued without
// waiting for its transaction, so consecutive commits share transactions
// (and fsyncs). The writer commits in queue order, so a firehose cursor
// saved later never commits before them; anything else that acts on the
// repo first waits for its queued writes (repos.Table.Lock waits for the
// pipeline, which lives in internal/repos beside the lock).
package ingest

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// Config is what an Ingest needs. Every field is required unless said.
type Config struct {
	// Store is read for repo states, held commits and cursors.
	Store store.Store
	// Writer is the group-commit writer: live commits are submitted to it
	// without waiting (Submit).
	Writer *writer.Writer
	// Write carries every other write (Writer.Write, or an adapter of it).
	Write repos.Writer
	// Repos is the per-repo lock and the state transitions.
	Repos *repos.Table
	// Pipeline is the state of live writes queued and not yet committed;
	// Repos waits for it.
	Pipeline *repos.Pipeline
	// Resolver finds signing keys.
	Resolver resolver.Resolver
	// CheckHandle, if set, is called (and must not block) after an
	// #identity was applied without the repo's handle (the resolver
	// answered before checking it): the handle is checked beside the live
	// path and written, with a live identity event if it changed.
	CheckHandle func(did string, live bool)
	// Filter returns the filter in force.
	Filter func() *filter.Filter
	// FullVerify checks signatures and the sync 1.1 inversion of live
	// commits; otherwise only structure, limits and the chain.
	FullVerify bool
	// HTTPClient connects to the firehose sources.
	HTTPClient *http.Client
	// Workers is how many repos are applied in parallel per source.
	Workers int
	// MaxFrameSize is the largest firehose frame read (0: firehose's
	// default).
	MaxFrameSize int64
	// CursorInterval is how often cursors are saved.
	CursorInterval time.Duration
	// Logger receives the logs.
	Logger *slog.Logger
	// MaxHeldPerRepo and MaxHeld cap the live commits held for repos that
	// are not synced, per repo and in total; past a cap the repo's held
	// commits are dropped and it is backfilled in full. 0 means
	// DefaultMaxHeldPerRepo (10,000) and DefaultMaxHeld (1,000,000);
	// negative means no cap.
	MaxHeldPerRepo, MaxHeld int
	// HostAuthority, for firehose sources that are PDS hosts rather than
	// relays, applies a commit only when it comes from the host that the
	// repo's DID document names: after an account moves, the old host's
	// commits for it are ignored.
	HostAuthority bool
}

// Ingest follows firehose sources and applies their messages. Create it
// with New; Close stops the work it started in the background (resyncs
// after failed writes) and waits for it.
type Ingest struct {
	cfg     Config
	log     *slog.Logger
	st      store.Store
	w       *writer.Writer
	res     resolver.Resolver
	repos   *repos.Table
	pipe    *repos.Pipeline
	keys    *keyCache
	metrics *Metrics
	held    *heldCap
	recent  *recent

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New returns an Ingest over cfg. Nothing runs until Follow.
func New(cfg Config) *Ingest {
	in := &Ingest{cfg: cfg, log: cfg.Logger, st: cfg.Store, w: cfg.Writer, res: cfg.Resolver,
		repos: cfg.Repos, pipe: cfg.Pipeline, keys: newKeyCache(), metrics: NewMetrics(),
		held: newHeldCap(cfg.MaxHeldPerRepo, cfg.MaxHeld), recent: newRecent()}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	return in
}

// Metrics returns the counters of what was received and applied.
func (in *Ingest) Metrics() *Metrics { return in.metrics }

// Close stops the background work and waits for it. Call it once Follow
// has returned and before the writer stops.
func (in *Ingest) Close() {
	in.cancel()
	in.bg.Wait()
}

// write runs fn through the write path.
func (in *Ingest) write(ctx context.Context, fn func(tx store.Tx) error) error {
	return in.cfg.Write.Write(ctx, fn)
}
