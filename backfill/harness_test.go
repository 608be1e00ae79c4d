package backfill_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/logcheck"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/testnet"
)

// env is a store, a writer, a resolver and a filter around a test network.
type env struct {
	t      testing.TB
	ctx    context.Context
	net    *testnet.Network
	st     store.Store
	w      *writer.Writer
	res    *resolver.Static
	filter atomic.Pointer[filter.Filter]
}

func newEnv(t testing.TB, net *testnet.Network, spec filter.Spec) *env {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "cistern.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := writer.New(st, writer.Options{})
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	e := &env{t: t, ctx: ctx, net: net, st: st, w: w, res: resolver.NewStatic()}
	e.setFilter(spec)
	for _, a := range net.Accounts() {
		e.publish(a)
	}
	return e
}

func (e *env) setFilter(spec filter.Spec) {
	f, err := filter.Compile(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	e.filter.Store(f)
}

// publish makes the resolver know an account.
func (e *env) publish(a *testnet.Account) {
	e.res.Put(&resolver.Identity{DID: a.DID(), Handle: a.Handle(), PDS: a.Host().URL(), SigningKey: a.PublicKey()})
}

// options returns scheduler options over the env, modified by mod.
func (e *env) options(mod func(o *backfill.Options)) backfill.Options {
	o := backfill.Options{
		Store:    e.st,
		Writer:   e.w,
		Resolver: e.res,
		Filter:   e.filter.Load,
		Verify:   true,
		Logger:   discardLogger(),
	}
	if mod != nil {
		mod(&o)
	}
	return o
}

func (e *env) scheduler(mod func(o *backfill.Options)) *backfill.Scheduler {
	s, err := backfill.New(e.options(mod))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// track marks a repo pending (new ones with the given reason) and queues
// it, as the indexer does on Track and Resync.
func (e *env) track(reason string, dids ...syntax.DID) {
	e.t.Helper()
	err := e.w.Write(e.ctx, func(tx store.Tx) error {
		for _, d := range dids {
			r, err := tx.Repo(d.String())
			if errors.Is(err, store.ErrNotFound) {
				r, err = &store.Repo{DID: d.String(), Reason: reason}, nil
			}
			if err != nil {
				return err
			}
			c := *r
			c.State = store.StatePending
			if err := tx.PutRepo(&c); err != nil {
				return err
			}
			if err := tx.Enqueue(d.String(), time.Now()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) repo(did syntax.DID) *store.Repo {
	e.t.Helper()
	var r *store.Repo
	err := e.st.View(e.ctx, func(tx store.ReadTx) error {
		var err error
		r, err = tx.Repo(did.String())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// queued returns the due time of the repo's queue entry, if any.
func (e *env) queued(did syntax.DID) (time.Time, bool) {
	e.t.Helper()
	var due time.Time
	var ok bool
	err := e.st.View(e.ctx, func(tx store.ReadTx) error {
		return tx.ScanQueue(func(d string, t time.Time) (bool, error) {
			if d == did.String() {
				due, ok = t, true
				return false, nil
			}
			return true, nil
		})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return due, ok
}

// stored returns the stored records of a repo: path → CID.
func (e *env) stored(did syntax.DID) map[string]string {
	e.t.Helper()
	out, err := logcheck.Records(e.ctx, e.st, did.String())
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// events returns the events after id `after`.
func (e *env) events(after uint64) []*store.Event {
	e.t.Helper()
	evs, err := logcheck.Events(e.ctx, e.st, after)
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func (e *env) lastEvent() uint64 {
	e.t.Helper()
	var newest uint64
	err := e.st.View(e.ctx, func(tx store.ReadTx) error {
		var err error
		_, newest, err = tx.EventBounds()
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return newest
}

// fold folds backfill events (none may be live) with logcheck.Fold,
// failing the test on any event that does not follow from the ones before.
func fold(t testing.TB, evs []*store.Event) map[string]map[string]string {
	t.Helper()
	for _, ev := range evs {
		if ev.Kind == store.KindRecord && ev.Live {
			t.Fatalf("backfill event %d is live", ev.ID)
		}
	}
	out, err := logcheck.Fold(evs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// want returns the account's records in the given collections: path → CID.
func want(a *testnet.Account, colls ...string) map[string]string {
	return logcheck.Want(a, func(c string) bool { return slices.Contains(colls, c) })
}

// diffMaps is logcheck.Diff: "" when got equals want.
func diffMaps(got, want map[string]string) string { return logcheck.Diff(got, want) }

// run starts s.Run and returns a function that stops it and waits.
func run(t testing.TB, s *backfill.Scheduler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitUntil polls cond until it holds or 60s pass.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// failingWriter fails every write after the first n.
type failingWriter struct {
	w    backfill.Writer
	n    int64
	done atomic.Int64
}

var errCrash = errors.New("simulated crash")

func (f *failingWriter) Write(ctx context.Context, fn func(tx store.Tx) error) error {
	if f.done.Add(1) > f.n {
		return errCrash
	}
	return f.w.Write(ctx, fn)
}

// rotatingResolver serves a stale identity until purged, then a fresh one.
type rotatingResolver struct {
	*resolver.Static
	fresh  *resolver.Identity
	purged atomic.Int64
}

func (r *rotatingResolver) Resolve(ctx context.Context, did syntax.DID) (*resolver.Identity, error) {
	if r.purged.Load() > 0 {
		c := *r.fresh
		return &c, nil
	}
	return r.Static.Resolve(ctx, did)
}

func (r *rotatingResolver) Purge(ctx context.Context, did syntax.DID) error {
	r.purged.Add(1)
	return nil
}
