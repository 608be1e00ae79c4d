// Package repos owns the repo state machine: the per-repo lock and every
// transition of a repo's state (store.Repo.State), each a named function
// that is the only place writing that state, in the transaction of its
// effects.
//
// The indexer (package cistern), live ingestion (internal/ingest), the
// discovery crawl (internal/crawl), filter changes (internal/filterchange),
// handle checks (internal/handles) and backfill all change repo states
// through it; none writes a state itself. A reader finds every way into a
// state here:
//
//	untracked ─Track/Discover─► pending ─(backfill)─► backfilling ─FinishBackfill/MarkSynced─► synced
//	synced ─MarkDesync─► desynchronized ─► pending (queued again)
//	any active ─Requeue/Resync─► pending
//	any ─SetInactive─► deactivated | takendown | suspended ─Reactivate─► pending
//	any ─BeginDelete/Untrack─► deleted (records removed with DeleteRecords)
//
// Backfill's own transitions (claim, failure, finalize) use the tx-level
// functions (MarkSynced, ClearError, InactiveState, DeleteRecords).
//
// The package also keeps the persisted counts of rejected commits.
package repos

import (
	"context"
	"sync"

	"github.com/cistern-dev/cistern/store"
)

// Why a repo is tracked (store.Repo.Reason).
const (
	ReasonExplicit = "explicit" // Track, or listed in the filter's DIDs
	ReasonSignal   = "signal"   // wrote a record in a signal collection
	ReasonNetwork  = "network"  // full-network mode
)

// Writer is the one write path (internal/writer, or an adapter over it):
// fn runs in a transaction shared with other writes, may run more than
// once and must touch nothing but tx.
type Writer interface {
	Write(ctx context.Context, fn func(tx store.Tx) error) error
}

// Pending is what a repo's lock waits for: writes of the repo queued and
// not yet committed (a Pipeline, which internal/ingest's live commits
// fill). Settle returns once none is queued.
type Pending interface {
	Settle(did string)
}

// Options are what a Table needs.
type Options struct {
	// Store is read for repo states and records. Required.
	Store store.Store
	// Writer carries every write. Required.
	Writer Writer
	// Pending, if set, is waited for by Lock.
	Pending Pending
	// Kick, if set, is called after a repo was queued for backfill.
	Kick func()
}

// Table is the repos' lock and state transitions. It is safe for
// concurrent use. Methods documented "the caller holds the lock" must be
// called between Lock (or LockLive) and its unlock.
type Table struct {
	st      store.Store
	w       Writer
	pending Pending
	kick    func()
	mus     [256]sync.Mutex
}

// New returns a Table over opts.
func New(opts Options) *Table {
	t := &Table{st: opts.Store, w: opts.Writer, pending: opts.Pending, kick: opts.Kick}
	if t.kick == nil {
		t.kick = func() {}
	}
	return t
}

// Lock serialises live processing, draining and state changes of one
// repo, and waits for the repo's pending writes to commit, so that what the
// caller reads from the store is the repo's current state. It returns the
// unlock.
func (t *Table) Lock(did string) func() {
	unlock := t.LockLive(did)
	if t.pending != nil {
		t.pending.Settle(did)
	}
	return unlock
}

// LockLive is Lock without the wait for pending writes: for live commits,
// which read the pipelined state.
func (t *Table) LockLive(did string) func() {
	h := uint32(2166136261)
	for i := 0; i < len(did); i++ {
		h = (h ^ uint32(did[i])) * 16777619
	}
	m := &t.mus[h%uint32(len(t.mus))]
	m.Lock()
	return m.Unlock
}

// Kick wakes the backfill scheduler.
func (t *Table) Kick() { t.kick() }

// Get reads one repo's state; store.ErrNotFound when it is not tracked.
func (t *Table) Get(ctx context.Context, did string) (*store.Repo, error) {
	var r *store.Repo
	err := t.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		r, err = tx.Repo(did)
		return err
	})
	return r, err
}

// ForEach calls fn for every repo, reading them in pages so that fn may
// write.
func (t *Table) ForEach(ctx context.Context, fn func(r *store.Repo) error) error {
	after := ""
	for {
		var page []*store.Repo
		err := t.st.View(ctx, func(tx store.ReadTx) error {
			return tx.ScanRepos(after, func(r *store.Repo) (bool, error) {
				page = append(page, r)
				return len(page) < 500, nil
			})
		})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return err
			}
		}
		after = page[len(page)-1].DID
	}
}
