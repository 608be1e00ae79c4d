package handles_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/internal/handles"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

// checker is a resolver.HandleChecker whose checks answer from handles as
// they were when the check began, after waiting at gate (when set).
type checker struct {
	resolver.Resolver // unused: only CheckHandle is called

	mu      sync.Mutex
	handles map[syntax.DID]syntax.Handle
	gate    chan struct{}
	running int
	peak    int
	checks  map[syntax.DID]int
}

func newChecker() *checker {
	return &checker{handles: make(map[syntax.DID]syntax.Handle), checks: make(map[syntax.DID]int)}
}

func (c *checker) ResolveDocument(context.Context, syntax.DID) (*resolver.Identity, error) {
	return nil, errors.New("not used")
}

func (c *checker) CheckHandle(ctx context.Context, did syntax.DID) (syntax.Handle, error) {
	c.mu.Lock()
	c.running++
	c.peak = max(c.peak, c.running)
	c.checks[did]++
	gate := c.gate
	h, ok := c.handles[did] // the document as it was when the check began
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running--
		c.mu.Unlock()
	}()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if !ok {
		return "", fmt.Errorf("%s: %w", did, resolver.ErrNotFound)
	}
	return h, nil
}

func (c *checker) set(did syntax.DID, h syntax.Handle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handles[did] = h
}

type env struct {
	st  store.Store
	w   *writer.Writer
	res *checker
	rt  *repos.Table
	c   *handles.Checker
}

func newEnv(t *testing.T, opts handles.Options) *env {
	t.Helper()
	st, err := boltstore.Open(t.TempDir()+"/h.db", &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := writer.New(st, writer.Options{})
	wdone := make(chan struct{})
	go func() { defer close(wdone); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-wdone; st.Close() })
	res := newChecker()
	rt := repos.New(repos.Options{Store: st, Writer: w})
	return &env{st: st, w: w, res: res, rt: rt, c: handles.New(handles.Deps{Resolver: res, Repos: rt}, opts)}
}

// run runs the Checker until the test ends.
func (e *env) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func (e *env) track(t *testing.T, did, handle string) {
	t.Helper()
	err := e.w.Write(context.Background(), func(tx store.Tx) error {
		return tx.PutRepo(&store.Repo{DID: did, State: store.StateSynced, Handle: handle})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) handle(t *testing.T, did string) string {
	t.Helper()
	var h string
	err := e.st.View(context.Background(), func(tx store.ReadTx) error {
		r, err := tx.Repo(did)
		if err == nil {
			h = r.Handle
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (e *env) identityEvents(t *testing.T) []*store.Event {
	t.Helper()
	var out []*store.Event
	err := e.st.View(context.Background(), func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			if ev.Kind == store.KindIdentity {
				out = append(out, ev)
			}
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestChecker_WritesVerdictsWithAnEventWhenChanged(t *testing.T) {
	e := newEnv(t, handles.Options{})
	tests := []struct {
		did, stored, verdict string
		live                 bool
		wantEvent            bool
	}{
		{"did:plc:first", "", "first.test", false, true},         // first known
		{"did:plc:same", "same.test", "same.test", false, false}, // unchanged: no event
		{"did:plc:moved", "old.test", "new.test", true, true},    // changed, after an #identity
		{"did:plc:broken", "was.test", "handle.invalid", false, true},
	}
	for _, tt := range tests {
		e.track(t, tt.did, tt.stored)
		e.res.set(syntax.DID(tt.did), syntax.Handle(tt.verdict))
		e.c.Request(tt.did, tt.live)
	}
	e.c.Request("did:plc:untracked", false) // not tracked: nothing written
	e.res.set("did:plc:untracked", "untracked.test")
	e.run(t)
	waitFor(t, "every check", func() bool { return e.c.Stats().Checked == int64(len(tests)+1) })
	waitFor(t, "the writes", func() bool { return e.handle(t, "did:plc:broken") == "handle.invalid" })

	evs := e.identityEvents(t)
	byDID := make(map[string]*store.Event)
	for _, ev := range evs {
		byDID[ev.DID] = ev
	}
	for _, tt := range tests {
		if h := e.handle(t, tt.did); h != tt.verdict {
			t.Errorf("%s: stored handle %q, want %q", tt.did, h, tt.verdict)
		}
		ev, ok := byDID[tt.did]
		if ok != tt.wantEvent {
			t.Errorf("%s: identity event %v, want %v", tt.did, ok, tt.wantEvent)
		}
		if ok && (ev.Handle != tt.verdict || ev.Live != tt.live) {
			t.Errorf("%s: event handle %q live %v, want %q live %v", tt.did, ev.Handle, ev.Live, tt.verdict, tt.live)
		}
	}
	if len(evs) != 3 {
		t.Errorf("%d identity events, want 3", len(evs))
	}
	err := e.st.View(context.Background(), func(tx store.ReadTx) error {
		_, err := tx.Repo("did:plc:untracked")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("untracked repo: %v, want ErrNotFound (a check never creates a repo)", err)
	}
	if st := e.c.Stats(); st.Changed != 3 {
		t.Errorf("Stats.Changed = %d, want 3", st.Changed)
	}
}

func TestChecker_BoundsConcurrencyAndQueue(t *testing.T) {
	e := newEnv(t, handles.Options{Concurrency: 3, MaxQueued: 5})
	e.res.gate = make(chan struct{})
	for i := range 5 {
		did := fmt.Sprintf("did:plc:q%d", i)
		e.track(t, did, "")
		e.res.set(syntax.DID(did), syntax.Handle(fmt.Sprintf("q%d.test", i)))
		if !e.c.Request(did, false) {
			t.Fatalf("request %d dropped below MaxQueued", i)
		}
		e.c.Request(did, false) // asked twice: queued once
	}
	if e.c.Request("did:plc:overflow", false) {
		t.Error("request beyond MaxQueued accepted")
	}
	if st := e.c.Stats(); st.Queued != 5 || st.Dropped != 1 {
		t.Errorf("Stats = %+v, want 5 queued, 1 dropped", st)
	}
	e.run(t)
	waitFor(t, "3 checks running", func() bool { return e.c.Stats().Running == 3 })
	// A worker counts as Running before it calls the resolver: wait until
	// the three are in it, or the gate may open before the third arrives.
	waitFor(t, "3 checks at the resolver", func() bool {
		e.res.mu.Lock()
		defer e.res.mu.Unlock()
		return e.res.running == 3
	})
	close(e.res.gate)
	waitFor(t, "every check", func() bool { return e.c.Stats().Checked == 5 })
	e.res.mu.Lock()
	defer e.res.mu.Unlock()
	if e.res.peak != 3 {
		t.Errorf("%d checks ran at once, want Concurrency 3", e.res.peak)
	}
	for did, n := range e.res.checks {
		if n != 1 {
			t.Errorf("%s checked %d times, want 1", did, n)
		}
	}
}

func TestChecker_RequestDuringCheckChecksAgain(t *testing.T) {
	e := newEnv(t, handles.Options{})
	const did = "did:plc:again"
	e.track(t, did, "")
	e.res.set(did, "before.test")
	e.res.gate = make(chan struct{})
	e.c.Request(did, false)
	e.run(t)
	waitFor(t, "the check to start", func() bool {
		e.res.mu.Lock()
		defer e.res.mu.Unlock()
		return e.res.checks[did] == 1
	})
	// The document changes while the check runs (an #identity): the
	// answer of the running check may be stale, so it is checked again.
	e.res.set(did, "after.test")
	e.c.Request(did, true)
	close(e.res.gate)
	waitFor(t, "the second check", func() bool { return e.handle(t, did) == "after.test" })
	evs := e.identityEvents(t)
	if last := evs[len(evs)-1]; last.Handle != "after.test" || !last.Live {
		t.Errorf("last identity event %+v, want live, after.test", last)
	}
}

func TestChecker_FailedCheckWritesNothing(t *testing.T) {
	e := newEnv(t, handles.Options{})
	e.track(t, "did:plc:gone", "kept.test")
	e.c.Request("did:plc:gone", false) // the checker knows no handle: ErrNotFound
	e.run(t)
	waitFor(t, "the failure", func() bool { return e.c.Stats().Failed == 1 })
	if h := e.handle(t, "did:plc:gone"); h != "kept.test" {
		t.Errorf("handle %q after a failed check, want kept.test", h)
	}
}

func TestChecker_RunChecksReposStoredWithoutAHandle(t *testing.T) {
	e := newEnv(t, handles.Options{})
	e.c = handles.New(handles.Deps{Resolver: e.res, Repos: e.rt, Store: e.st}, handles.Options{})
	// A restart lost the checks of these repos: they have no handle.
	const n = 2500 // more than one page of the sweep
	for i := range n {
		did := fmt.Sprintf("did:plc:lost%05d", i)
		e.track(t, did, "")
		e.res.set(syntax.DID(did), syntax.Handle(fmt.Sprintf("lost%d.test", i)))
	}
	e.track(t, "did:plc:known", "known.test")
	err := e.w.Write(context.Background(), func(tx store.Tx) error {
		return tx.PutRepo(&store.Repo{DID: "did:plc:deleted", State: store.StateDeleted})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.run(t)
	waitFor(t, "every lost check", func() bool { return e.c.Stats().Checked == n })
	for _, i := range []int{0, n / 2, n - 1} {
		did := fmt.Sprintf("did:plc:lost%05d", i)
		if h, want := e.handle(t, did), fmt.Sprintf("lost%d.test", i); h != want {
			t.Errorf("%s: handle %q, want %q", did, h, want)
		}
	}
	e.res.mu.Lock()
	defer e.res.mu.Unlock()
	if e.res.checks["did:plc:known"] != 0 || e.res.checks["did:plc:deleted"] != 0 {
		t.Errorf("checked a repo with a handle (%d) or a deleted one (%d)", e.res.checks["did:plc:known"], e.res.checks["did:plc:deleted"])
	}
}
