// Package handles checks the handles of tracked repos beside backfill and
// live sync, and writes each verdict on the repo's state.
//
// Backfill and live verification need only a repo's DID document (its PDS
// endpoint and signing key). The bidirectional handle check (a DNS TXT
// lookup, then an HTTPS request to the handle's own domain) can take
// seconds, or hang until a timeout, on a slow or dead domain. So the
// indexer resolves with the document alone (see Deferred), and whoever
// writes a repo's identity without its handle asks a Checker for the check
// (Request). The Checker runs checks with its own concurrency; when one
// answers, the handle is written on the repo's state (through the repo
// table, which appends an identity event in the same transaction when the
// handle changed).
package handles

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// Repos records verdicts on repo states; *repos.Table satisfies it.
type Repos interface {
	// SetHandle writes handle on the repo did if it is tracked and the
	// handle changed, with an identity event (live or not), and reports
	// whether it changed.
	SetHandle(ctx context.Context, did, handle string, live bool) (bool, error)
}

// Deps is everything a Checker touches.
type Deps struct {
	// Resolver checks the handles. Required.
	Resolver resolver.HandleChecker
	// Repos records the verdicts. Required.
	Repos Repos
	// Store, if set, is swept when Run starts: every repo stored without
	// a handle (its check was lost to a restart) is queued for a check.
	Store store.Store
	// Logger receives failed checks (debug) and writes (warn). Default:
	// discard.
	Logger *slog.Logger
}

// Options tune a Checker. Zero values mean the defaults.
type Options struct {
	// Concurrency is how many handles are checked at once. A check mostly
	// waits on the network (bounded by the resolver's own timeout), so
	// this can be well above the number of cores. Default 32.
	Concurrency int
	// MaxQueued bounds the repos waiting for a check. A request beyond it
	// is dropped (and counted): the repo keeps the handle it had, and is
	// checked again the next time its identity is resolved without a
	// known handle (its next backfill or #identity). Default 100,000.
	MaxQueued int
}

// Defaults of Options.
const (
	DefaultConcurrency = 32
	DefaultMaxQueued   = 100_000
)

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	return o
}

// Stats counts what a Checker did.
type Stats struct {
	Queued  int   `json:"queued"`  // waiting for a check now
	Running int   `json:"running"` // being checked now
	Checked int64 `json:"checked"` // checks that answered (and whose verdict was written)
	Changed int64 `json:"changed"` // verdicts that changed a stored handle
	Failed  int64 `json:"failed"`  // checks that failed (the DID did not resolve)
	Dropped int64 `json:"dropped"` // requests dropped because MaxQueued was reached (checked again at the repo's next resolution)
}

// Checker runs handle checks for repos and writes their verdicts. Request
// is safe for concurrent use and never blocks; Run does the checks.
type Checker struct {
	deps Deps
	opts Options

	mu      sync.Mutex
	queue   []string        // DIDs in request order
	queued  map[string]bool // DID → its event is live; every DID in queue
	running map[string]*job // DID → the check in progress
	wake    chan struct{}   // signalled when queue grows

	checked, changed, failed, dropped atomic.Int64
}

// job is a check in progress; a request for its DID while it runs sets
// again, and the DID is queued again when it ends (its document may have
// changed since the check started).
type job struct {
	live, again, againLive bool
}

// New returns a Checker; nothing is checked until Run.
func New(deps Deps, opts Options) *Checker {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Checker{
		deps:    deps,
		opts:    opts.withDefaults(),
		queued:  make(map[string]bool),
		running: make(map[string]*job),
		wake:    make(chan struct{}, 1),
	}
}

// Request asks for the handle of did to be checked and written. live says
// whether the identity event a changed handle produces is marked live (the
// check follows a firehose #identity). A DID already waiting is not queued
// twice. It reports false when the request was dropped (queue full).
func (c *Checker) Request(did string, live bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j, ok := c.running[did]; ok {
		j.again = true
		j.againLive = j.againLive || live
		return true
	}
	if l, ok := c.queued[did]; ok {
		c.queued[did] = l || live
		return true
	}
	if len(c.queue) >= c.opts.MaxQueued {
		c.dropped.Add(1)
		return false
	}
	c.queue = append(c.queue, did)
	c.queued[did] = live
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// Stats returns the Checker's counters.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Queued: len(c.queue), Running: len(c.running), Checked: c.checked.Load(),
		Changed: c.changed.Load(), Failed: c.failed.Load(), Dropped: c.dropped.Load()}
}

// Run checks queued handles, Options.Concurrency at a time, until ctx ends;
// it returns nil once its checks in progress have stopped. Requests still
// queued stay queued for the next Run.
//
// With Deps.Store set, Run first queues every stored repo without a handle
// (not a deleted one), until MaxQueued is reached: checks requested before a
// restart are not lost. A store error ends the sweep with a warning.
func (c *Checker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range c.opts.Concurrency {
		wg.Go(func() { c.work(ctx) })
	}
	if c.deps.Store != nil {
		if err := c.sweep(ctx); err != nil && ctx.Err() == nil {
			c.deps.Logger.Warn("handle checks: looking for repos without a handle", "err", err)
		}
	}
	wg.Wait()
	return nil
}

// sweepPage is how many repos one read transaction of the sweep visits.
const sweepPage = 1000

// sweep queues the stored repos that have no handle.
func (c *Checker) sweep(ctx context.Context) error {
	after := ""
	for ctx.Err() == nil {
		n := 0
		full := false
		err := c.deps.Store.View(ctx, func(tx store.ReadTx) error {
			return tx.ScanRepos(after, func(r *store.Repo) (bool, error) {
				after = r.DID
				n++
				if r.Handle == "" && r.State != store.StateDeleted && !c.Request(r.DID, false) {
					full = true
					return false, nil
				}
				return n < sweepPage, nil
			})
		})
		if err != nil || full || n < sweepPage {
			return err
		}
	}
	return nil
}

func (c *Checker) work(ctx context.Context) {
	for {
		did, j, ok := c.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
				// Another worker may be idle too: pass the signal on
				// while work remains.
				c.mu.Lock()
				if len(c.queue) > 1 {
					select {
					case c.wake <- struct{}{}:
					default:
					}
				}
				c.mu.Unlock()
				continue
			}
		}
		c.check(ctx, did, j)
		c.mu.Lock()
		delete(c.running, did)
		requeue := j.again && ctx.Err() == nil
		c.mu.Unlock()
		if requeue {
			c.Request(did, j.againLive)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// next takes the oldest queued DID and marks it running.
func (c *Checker) next() (string, *job, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return "", nil, false
	}
	did := c.queue[0]
	c.queue[0] = ""
	c.queue = c.queue[1:]
	if len(c.queue) == 0 {
		c.queue = nil // let the backing array go
	}
	j := &job{live: c.queued[did]}
	delete(c.queued, did)
	c.running[did] = j
	return did, j, true
}

// check checks one handle and writes the verdict. A check cut short by ctx
// leaves the DID queued for the next Run.
func (c *Checker) check(ctx context.Context, did string, j *job) {
	d, err := syntax.ParseDID(did)
	if err != nil {
		c.failed.Add(1)
		return
	}
	h, err := c.deps.Resolver.CheckHandle(ctx, d)
	if err != nil {
		if ctx.Err() != nil {
			c.requeue(did, j.live)
			return
		}
		c.failed.Add(1)
		c.deps.Logger.Debug("handle check failed", "did", did, "err", err)
		return
	}
	changed, err := c.deps.Repos.SetHandle(ctx, did, h.String(), j.live)
	c.checked.Add(1)
	switch {
	case err != nil && ctx.Err() != nil:
		c.requeue(did, j.live)
	case err != nil:
		c.deps.Logger.Warn("writing a checked handle", "did", did, "handle", h, "err", err)
	case changed:
		c.changed.Add(1)
	}
}

// requeue puts did back at the front of the queue, for the next Run.
func (c *Checker) requeue(did string, live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.queued[did]; ok {
		return
	}
	c.queue = append([]string{did}, c.queue...)
	c.queued[did] = live
}

// Deferred returns a Resolver whose Resolve answers with hc's
// ResolveDocument: the identity without waiting for the handle check
// (Handle empty when it is not known yet). ResolveHandle and Purge are hc's.
func Deferred(hc resolver.HandleChecker) resolver.Resolver { return deferred{hc} }

type deferred struct{ resolver.HandleChecker }

func (d deferred) Resolve(ctx context.Context, did syntax.DID) (*resolver.Identity, error) {
	return d.ResolveDocument(ctx, did)
}
