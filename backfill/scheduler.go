package backfill

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// Scheduler backfills the repos of the store's queue. Create it with New and
// start it with Run; Backfill does one repo on demand. It is safe for
// concurrent use.
type Scheduler struct {
	opts   Options
	budget *budget
	hosts  *hosts
	kick   chan struct{}

	recovery *recovery

	mu      sync.Mutex
	running map[string]struct{}

	inflight, completed, failed, deferred, bytes, records atomic.Int64
	requests, sparseDone, fallbacks                       atomic.Int64

	// noBlocks remembers the hosts that do not serve getBlocks.
	noBlocks *hostMemo
	// ledger counts each host's work for Hosts and RecentFailures.
	ledger *ledger
}

// Stats counts the scheduler's work since New.
type Stats struct {
	// InFlight is the number of repos being backfilled now.
	InFlight int `json:"inFlight"`
	// Completed counts backfills that ended in a final state: synced, or
	// an outcome (deleted, inactive, not tracked).
	Completed int64 `json:"completed"`
	// Failed counts backfills that failed and were queued for a retry.
	Failed int64 `json:"failed"`
	// RateLimited counts backfills deferred because their host was paused.
	RateLimited int64 `json:"rateLimited"`
	// BytesFetched counts the bytes of the response bodies received: CARs
	// (getRepo, getBlocks) and the small JSON answers of a sparse backfill
	// (getLatestCommit, describeRepo).
	BytesFetched int64 `json:"bytesFetched"`
	// Requests counts the HTTP requests backfills made to PDS hosts,
	// failed ones included (not those of Get).
	Requests int64 `json:"requests"`
	// Sparse counts backfills completed with a sparse walk, and
	// SparseFallbacks the backfills that began one and fetched the repo
	// whole instead (the host lacked getBlocks, or the wanted ranges were
	// too large a part of the repo).
	Sparse          int64 `json:"sparse"`
	SparseFallbacks int64 `json:"sparseFallbacks"`
	// RecordsWritten counts record changes written (creates, updates,
	// deletes).
	RecordsWritten int64 `json:"recordsWritten"`
	// BudgetInUse is the bytes of the byte budget held now, and
	// BudgetPeak the most ever held at once.
	BudgetInUse int64 `json:"budgetInUse"`
	BudgetPeak  int64 `json:"budgetPeak"`
	// HostsRateLimited is the number of hosts paused after a 429 now.
	HostsRateLimited int `json:"hostsRateLimited"`
}

// New returns a scheduler. It does nothing until Run or Backfill.
func New(opts Options) (*Scheduler, error) {
	opts = opts.withDefaults()
	switch {
	case opts.Store == nil:
		return nil, errors.New("backfill: Options.Store is required")
	case opts.Writer == nil:
		return nil, errors.New("backfill: Options.Writer is required")
	case opts.Resolver == nil:
		return nil, errors.New("backfill: Options.Resolver is required")
	case opts.Filter == nil:
		return nil, errors.New("backfill: Options.Filter is required")
	}
	if _, err := ParseStrategy(string(opts.Strategy)); err != nil {
		return nil, err
	}
	return &Scheduler{
		opts:     opts,
		budget:   newBudget(opts.ByteBudget),
		hosts:    newHosts(opts.PerHost, opts.HostInterval, opts.Now),
		kick:     make(chan struct{}, 1),
		running:  make(map[string]struct{}),
		noBlocks: newHostMemo(opts.MaxBackoff, opts.Now),
		ledger:   newLedger(opts.Now),

		recovery: newRecovery(),
	}, nil
}

// Kick wakes Run to look at the queue now, for instance after an enqueue.
// It never blocks.
func (s *Scheduler) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	used, peak := s.budget.inUse()
	return Stats{
		InFlight:         int(s.inflight.Load()),
		Completed:        s.completed.Load(),
		Failed:           s.failed.Load(),
		RateLimited:      s.deferred.Load(),
		BytesFetched:     s.bytes.Load(),
		Requests:         s.requests.Load(),
		Sparse:           s.sparseDone.Load(),
		SparseFallbacks:  s.fallbacks.Load(),
		RecordsWritten:   s.records.Load(),
		BudgetInUse:      used,
		BudgetPeak:       peak,
		HostsRateLimited: s.hosts.limited(),
	}
}

func (s *Scheduler) claim(did string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.running[did]; ok {
		return false
	}
	s.running[did] = struct{}{}
	return true
}

func (s *Scheduler) unclaim(did string) {
	s.mu.Lock()
	delete(s.running, did)
	s.mu.Unlock()
}

func (s *Scheduler) claimed(did string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.running[did]
	return ok
}

// scanRetry is the wait before reading the queue again after a store error.
const scanRetry = time.Second

type workerDone struct {
	did        string
	unrecorded bool
}

// Run backfills due repos of the store's queue, in order of due time, at
// most Concurrency at once and never one DID twice at once. Between repos
// it sleeps until the next due time or a Kick. A repo stays queued while it
// is backfilled: a crash leaves it due. Run returns nil once ctx ends and
// its workers have stopped.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan workerDone, s.opts.Concurrency)
	active := 0
	// cooldown holds back repos whose failure could not be recorded (the
	// store or writer failing), so they are not picked again at once.
	cooldown := make(map[string]time.Time)

	for {
		if ctx.Err() != nil {
			return nil
		}
		now := s.opts.Now()
		var (
			dids []string
			wake time.Time
		)
		scanErr := error(nil)
		if free := s.opts.Concurrency - active; free > 0 {
			scanErr = s.opts.Store.View(ctx, func(tx store.ReadTx) error {
				return tx.ScanQueue(func(did string, due time.Time) (bool, error) {
					if due.After(now) {
						wake = due
						return false, nil
					}
					if t, ok := cooldown[did]; ok {
						if t.After(now) {
							if wake.IsZero() || t.Before(wake) {
								wake = t
							}
							return true, nil
						}
						delete(cooldown, did)
					}
					if s.claimed(did) {
						return true, nil
					}
					dids = append(dids, did)
					return len(dids) < free, nil
				})
			})
			if scanErr != nil && ctx.Err() == nil {
				s.opts.Logger.Error("backfill: reading queue", "err", scanErr)
				wake = now.Add(scanRetry)
			}
		}
		for _, did := range dids {
			if !s.claim(did) {
				continue
			}
			active++
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, unrecorded := s.run(ctx, did)
				// Unclaim before saying so: the loop rescans the queue on
				// done, and a repo queued again during its own backfill
				// (a resync) must not be skipped as still claimed.
				s.unclaim(did)
				done <- workerDone{did: did, unrecorded: unrecorded && ctx.Err() == nil}
			}()
		}
		if len(dids) > 0 && active < s.opts.Concurrency {
			continue // more may be due
		}

		var timer *time.Timer
		var timerC <-chan time.Time
		if !wake.IsZero() && active < s.opts.Concurrency {
			timer = time.NewTimer(max(wake.Sub(s.opts.Now()), 0))
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
		case <-s.kick:
		case <-timerC:
		case d := <-done:
			active--
			if d.unrecorded {
				cooldown[d.did] = s.opts.Now().Add(s.opts.MinBackoff)
			}
		}
		if timer != nil {
			timer.Stop()
		}
		// Collect any other finished workers without blocking.
		for drained := false; !drained; {
			select {
			case d := <-done:
				active--
				if d.unrecorded {
					cooldown[d.did] = s.opts.Now().Add(s.opts.MinBackoff)
				}
			default:
				drained = true
			}
		}
	}
}
