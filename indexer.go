// Package cistern indexes a chosen part of the AT Protocol network into a
// local store, keeps it exactly in sync, answers queries over it, and hands
// the host application one ordered, replayable stream of changes.
//
// The host's duties, in order. First, Open an Indexer on a Config (a bbolt
// file or a store.Store, and a filter.Spec of what to track and store).
// Second, start Run in a goroutine: it follows the firehose, crawls for
// repos that wrote before, backfills and prunes, until its context ends.
// Third, query it (GetRecord, ListRecords, Repo, Stats...) and Subscribe to
// its events; a durable subscription Acks what it has handled, so that it
// resumes there. Finally, Close it: Close stops Run and waits for all it
// started.
//
//	ix, err := cistern.Open(cistern.Config{
//		Path:   "cistern.db",
//		Filter: filter.Spec{Signals: []string{"xyz.statusphere.status"}},
//	})
//	defer ix.Close()
//	go ix.Run(ctx)
//	sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Cursor: 0})
//	for ev := range sub.Events() { ... }
//
// Unset, Config.RelayURL and Config.PLCURL are the production network
// (wss://bsky.network, https://plc.directory); package cisterntest
// configures an Indexer for a simulated one (package testnet) in one call.
// With no Config.Logger, only warnings and errors are logged (to
// slog.Default's handler). Errors a caller can branch on: ErrClosed after
// Close, ErrNotTracked for a repo the indexer does not know, and
// ErrInvalidArgument for input that does not parse; queries take a DID or
// the handle of a tracked repo, as the HTTP API does.
//
// This package only wires the parts and answers queries. Underneath, every
// change goes through one group-commit writer (internal/writer) into a
// store.Store, with its event in the same transaction; internal/ingest
// follows the firehose and applies verified commits (package verify);
// internal/repos owns the repo state machine; backfill brings repos in from
// their PDS; internal/crawl discovers repos that wrote before; stream
// serves the event log.
package cistern

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/crawl"
	"github.com/cistern-dev/cistern/internal/handles"
	"github.com/cistern-dev/cistern/internal/ingest"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

var (
	// ErrClosed is returned (or wrapped) by every method of an Indexer
	// after Close.
	ErrClosed = errors.New("cistern: indexer closed")
	// ErrNotTracked is returned for a repo the indexer does not track.
	ErrNotTracked = errors.New("cistern: repo not tracked")
	// ErrRunning is returned by a second concurrent Run.
	ErrRunning = errors.New("cistern: indexer already running")
	// ErrInvalidArgument is wrapped by every error about bad input (a DID,
	// collection, record key, handle, limit or cursor that does not
	// parse); the message names the value. Nothing is written.
	ErrInvalidArgument = errors.New("cistern: invalid argument")
	// ErrExcluded is returned by Track for a DID the filter excludes.
	ErrExcluded = errors.New("cistern: DID is excluded by the filter")
)

// meta keys.
const (
	metaFilter      = "filter"
	metaFilterFrom  = "filter/changing-from"
	metaCrawlPrefix = "crawl/"
)

// Indexer indexes part of the network into a store. It is safe for
// concurrent use. Create it with Open; Close it when done.
type Indexer struct {
	cfg      Config
	log      *slog.Logger
	st       store.Store
	ownStore bool
	res      resolver.Resolver // the full answer, handle checked (queries); the paths get one that does not wait
	handles  *handles.Checker  // checks handles beside backfill and live; nil for a resolver that is no HandleChecker

	w      *writer.Writer
	events *stream.Log
	bf     *backfill.Scheduler
	filt   atomic.Pointer[filter.Filter]
	filtMu sync.Mutex       // serialises filter changes
	repos  *repos.Table     // per-repo lock and state transitions
	pipe   *ingest.Pipeline // live writes queued, per repo
	ing    *ingest.Ingest   // firehose sources, live commits

	crawler *crawl.Crawler   // discovery of repos that wrote before
	links   *backlinks.Index // the backlink index (Config.Backlinks)

	changedMu sync.Mutex
	changed   chan struct{} // closed and replaced after each commit

	ctx       context.Context // ends when the writer must stop
	cancel    context.CancelFunc
	runCtx    context.Context // ends at Close, stopping Run
	cancelRun context.CancelFunc
	bg        sync.WaitGroup // goroutines started by Open
	runWG     sync.WaitGroup // Run
	runMu     sync.Mutex     // orders Run's start against Close
	running   atomic.Bool
	closed    atomic.Bool
}

// Open opens (or creates) the store and returns an Indexer ready to answer
// queries. Nothing is fetched until Run.
func Open(cfg Config) (*Indexer, error) {
	ignored, mixed, plcDefault := cfg.ignoredSettings(), cfg.mixedNetworks(), cfg.PLCURL == ""
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ix := &Indexer{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}),
		pipe: ingest.NewPipeline()}
	ix.logSettings(ignored, mixed, plcDefault)
	ix.ctx, ix.cancel = context.WithCancel(context.Background())
	ix.runCtx, ix.cancelRun = context.WithCancel(context.Background())

	if cfg.ReadOnly && !isZeroSpec(cfg.Filter) {
		return nil, fmt.Errorf("%w: Config.ReadOnly with a Filter: the indexing process owns the filter", ErrInvalidArgument)
	}
	ix.st = cfg.Store
	if ix.st == nil {
		db, err := boltstore.Open(cfg.Path, nil)
		if err != nil {
			return nil, fmt.Errorf("cistern: open %s: %w", cfg.Path, err)
		}
		ix.st, ix.ownStore = db, true
	}
	if cfg.ReadOnly {
		ix.st = readOnlyStore{ix.st}
	}
	ix.res = cfg.Resolver
	if ix.res == nil {
		ix.res = resolver.NewCached(resolver.Options{
			PLCURL:                 cfg.PLCURL,
			HTTPClient:             cfg.HTTPClient,
			SkipHandleVerification: cfg.SkipHandleVerification,
			Logger:                 cfg.Logger,
		})
	}
	lopts := backlinks.Options{Store: ix.st, Enabled: cfg.Backlinks, Logger: cfg.Logger}
	if !cfg.ReadOnly {
		lopts.Write = ix.write
	}
	ix.links = backlinks.New(lopts)
	wopts := writer.Options{Logger: cfg.Logger, OnCommit: ix.committed}
	if cfg.Backlinks {
		wopts.Links = ix.links.Links
	}
	ix.w = writer.New(ix.st, wopts)
	ix.events = stream.New(ix.st, stream.Options{
		MaxAge:    cfg.Retention.MaxAge,
		MaxEvents: cfg.Retention.MaxEvents,
		Logger:    cfg.Logger,
		Writer:    ix.streamWriter(), // acks and prunes share the one write path
	})
	ix.bg.Add(1)
	go func() {
		defer ix.bg.Done()
		ix.w.Run(ix.ctx)
	}()
	ix.repos = repos.New(repos.Options{Store: ix.st, Writer: writeFunc(ix.write), Pending: ix.pipe,
		Kick: func() { ix.bf.Kick() }})
	var (
		checkHandle   func(did string, live bool)
		backfillCheck func(did string)
	)
	// fast is the resolver of the backfill, live and crawl paths: with a
	// HandleChecker, it does not wait for handle checks, which run beside
	// them. ix.res (queries such as DIDDocument) keeps the full answer.
	// The default resolver told to skip handle checks has none to defer,
	// and a read-only indexer writes no verdicts.
	fast := ix.res
	skipChecks := cfg.ReadOnly || (cfg.Resolver == nil && cfg.SkipHandleVerification)
	if hc, ok := ix.res.(resolver.HandleChecker); ok && !skipChecks {
		ix.handles = handles.New(handles.Deps{Resolver: hc, Repos: ix.repos, Store: ix.st, Logger: cfg.Logger},
			handles.Options{Concurrency: cfg.HandleCheckConcurrency})
		fast = handles.Deferred(hc)
		checkHandle = func(did string, live bool) { ix.handles.Request(did, live) }
		backfillCheck = func(did string) { ix.handles.Request(did, false) }
	}
	ix.ing = ingest.New(ingest.Config{
		CheckHandle:    checkHandle,
		Store:          ix.st,
		Writer:         ix.w,
		Write:          writeFunc(ix.write),
		Repos:          ix.repos,
		Pipeline:       ix.pipe,
		Resolver:       fast,
		Filter:         ix.Filter,
		FullVerify:     cfg.Verify == VerifyFull,
		HTTPClient:     cfg.HTTPClient,
		Workers:        cfg.FirehoseWorkers,
		MaxFrameSize:   cfg.FirehoseMaxFrameSize,
		CursorInterval: cfg.CursorInterval,
		Logger:         cfg.Logger,
		MaxHeldPerRepo: cfg.MaxHeldCommitsPerRepo,
		MaxHeld:        cfg.MaxHeldCommits,
		HostAuthority:  cfg.HostAuthority,
	})

	bcfg := cfg.Backfill
	ix.bf, err = backfill.New(backfill.Options{
		Store:        ix.st,
		Writer:       ix.w,
		Resolver:     fast,
		Filter:       ix.Filter,
		HTTPClient:   cfg.HTTPClient,
		Concurrency:  bcfg.Concurrency,
		ByteBudget:   bcfg.ByteBudget,
		PerHost:      bcfg.PerHost,
		HostInterval: bcfg.HostInterval,
		MaxRepoSize:  bcfg.MaxRepoSize,
		FetchTimeout: bcfg.FetchTimeout,
		Verify:       cfg.Verify != VerifyNone,
		MinBackoff:   bcfg.MinBackoff,
		MaxBackoff:   bcfg.MaxBackoff,
		BatchSize:    bcfg.BatchSize,
		Strategy:     bcfg.Strategy,
		Logger:       cfg.Logger,
		OnBackfilled: ix.ing.Drain,
		CheckHandle:  backfillCheck,
	})
	if err != nil {
		ix.shutdown()
		return nil, fmt.Errorf("cistern: backfill: %w", err)
	}

	ix.crawler = crawl.New(crawl.Config{
		Store:      ix.st,
		Write:      writeFunc(ix.write),
		Repos:      ix.repos,
		Resolver:   fast,
		Hosts:      ix.bf,
		HTTPClient: cfg.HTTPClient,
		URL:        cfg.CrawlURL,
		Filter:     ix.Filter,
		Logger:     cfg.Logger,
	})

	if err := ix.loadFilter(ix.ctx); err != nil {
		ix.shutdown()
		return nil, err
	}
	if err := ix.links.Open(ix.ctx); err != nil {
		ix.shutdown()
		return nil, fmt.Errorf("cistern: %w", err)
	}
	return ix, nil
}

// committed runs on the writer goroutine after every commit.
func (ix *Indexer) committed(newest uint64) {
	ix.events.Notify(newest)
	ix.changedMu.Lock()
	close(ix.changed)
	ix.changed = make(chan struct{})
	ix.changedMu.Unlock()
}

// changes returns a channel closed at the next commit.
func (ix *Indexer) changes() <-chan struct{} {
	ix.changedMu.Lock()
	defer ix.changedMu.Unlock()
	return ix.changed
}

// Run follows the network until ctx ends: the firehose sources, discovery
// crawlers, the backfill scheduler and event retention. It returns nil when
// ctx ends (after saving cursors), or the first fatal error. Run may be
// called again after it returned. With Config.ReadOnly it follows the store
// instead (see followStore): nothing is fetched or written.
func (ix *Indexer) Run(ctx context.Context) error {
	// runMu orders this start against Close: either Close sees this Run
	// in runWG and waits for it, or this Run sees closed.
	ix.runMu.Lock()
	if ix.closed.Load() {
		ix.runMu.Unlock()
		return ErrClosed
	}
	if !ix.running.CompareAndSwap(false, true) {
		ix.runMu.Unlock()
		return ErrRunning
	}
	ix.runWG.Add(1)
	ix.runMu.Unlock()
	defer ix.runWG.Done()
	defer ix.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ix.runCtx, cancel) // Close stops Run
	defer stop()

	var wg sync.WaitGroup
	errc := make(chan error, 8)
	start := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("cistern: %s: %w", name, err)
				cancel()
			}
		}()
	}
	if ix.cfg.ReadOnly {
		start("follow store", ix.followStore)
		wg.Wait()
		close(errc)
		return <-errc
	}
	start("backfill", ix.bf.Run)
	start("retention", ix.events.Run)
	if ix.cfg.Backlinks {
		start("backlink index", ix.links.Build)
	}
	if ix.handles != nil {
		start("handle checks", ix.handles.Run)
	}
	if !ix.cfg.NoFirehose {
		for _, src := range ix.cfg.Sources {
			start("firehose "+src, func(ctx context.Context) error { return ix.ing.Follow(ctx, src) })
		}
	}
	if !ix.cfg.NoCrawl {
		start("crawler", ix.crawler.Run)
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// Close stops Run if it is running, waits for everything the Indexer
// started, and closes the store if the Indexer opened it.
func (ix *Indexer) Close() error {
	ix.runMu.Lock()
	first := ix.closed.CompareAndSwap(false, true)
	ix.runMu.Unlock()
	if !first {
		return nil
	}
	// Let Run save its cursors through the writer before the writer stops.
	ix.cancelRun()
	ix.runWG.Wait()
	return ix.shutdown()
}

func (ix *Indexer) shutdown() error {
	ix.cancelRun()
	ix.ing.Close()
	ix.cancel()
	ix.bg.Wait()
	ix.events.Close()
	if ix.ownStore {
		return ix.st.Close()
	}
	return nil
}

// lock takes the repo's lock (repos.Table.Lock).
func (ix *Indexer) lock(did string) func() { return ix.repos.Lock(did) }

// write runs fn through the group-commit writer. It works until the
// writer stops, at the end of Close, so that Run can save its cursors while
// Close waits for it.
func (ix *Indexer) write(ctx context.Context, fn func(tx store.Tx) error) error {
	if ix.cfg.ReadOnly {
		return ErrReadOnly
	}
	err := ix.w.Write(ctx, fn)
	if errors.Is(err, writer.ErrClosed) {
		return ErrClosed
	}
	return err
}

// writeFunc adapts Indexer.write to repos.Writer.
type writeFunc func(ctx context.Context, fn func(tx store.Tx) error) error

func (f writeFunc) Write(ctx context.Context, fn func(tx store.Tx) error) error { return f(ctx, fn) }

// Store returns the store the Indexer writes to, for read-only use by
// tools; writing to it behind the Indexer's back breaks its invariants.
func (ix *Indexer) Store() store.Store { return ix.st }
