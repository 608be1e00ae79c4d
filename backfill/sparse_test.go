package backfill_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/logcheck"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

const (
	collFollow = "app.bsky.graph.follow"
	collBlock  = "app.bsky.graph.block"

	nsidGetRepo   = "com.atproto.sync.getRepo"
	nsidGetBlocks = "com.atproto.sync.getBlocks"

	nsidGetLatestCommit = "com.atproto.sync.getLatestCommit"
)

var strategies = []backfill.Strategy{backfill.StrategyFull, backfill.StrategySparse, backfill.StrategyAuto}

// mixedAccount is a repo of many posts, some likes, follows and blocks, and
// a few statuses (collOther).
func mixedAccount(t *testing.T, net *testnet.Network, handle string, posts int) *testnet.Account {
	return net.Account(t, handle, testnet.Records(collPost, posts), testnet.Records(collLike, 60),
		testnet.Records(collFollow, 20), testnet.Records(collBlock, 5), testnet.Records(collOther, 3))
}

// assertValues fails t unless every record stored for the account is one
// of the account's records now, CID and value.
func assertValues(t *testing.T, e *env, a *testnet.Account) {
	t.Helper()
	err := e.st.View(e.ctx, func(tx store.ReadTx) error {
		return tx.ScanRecords(store.RecordScan{DID: a.DID().String(), WithValues: true}, func(r *store.Record) (bool, error) {
			rec, ok := a.Record(r.Collection, r.RKey)
			if !ok {
				return false, fmt.Errorf("stored %s/%s, which the PDS does not hold", r.Collection, r.RKey)
			}
			if !bytes.Equal(r.CID, rec.CID.Bytes()) || !bytes.Equal(r.Value, rec.Value) {
				return false, fmt.Errorf("stored %s/%s differs from the PDS's record", r.Collection, r.RKey)
			}
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// wantFor returns the account's records that the filter spec stores.
func wantFor(t *testing.T, a *testnet.Account, spec filter.Spec) map[string]string {
	f, err := filter.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return logcheck.Want(a, f.Stores)
}

func TestBackfill_EveryStrategyStoresTheSameRecords(t *testing.T) {
	net := testnet.New(t)
	alice := mixedAccount(t, net, "alice.test", 600)
	did := alice.DID().String()
	host := alice.Host()
	cases := []struct {
		name  string
		colls []string
		// autoSparse: what StrategyAuto is expected to choose, when it is
		// clear-cut.
		autoSparse *bool
	}{
		{name: "one small collection", colls: []string{collOther}, autoSparse: ptr(true)},
		{name: "a prefix", colls: []string{"app.bsky.graph.*"}},
		{name: "two ranges", colls: []string{collOther, collLike}},
		{name: "the biggest collection", colls: []string{collPost}, autoSparse: ptr(false)},
		{name: "a collection the repo lacks", colls: []string{"com.example.absent"}, autoSparse: ptr(true)},
		{name: "every collection", colls: nil, autoSparse: ptr(false)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := filter.Spec{DIDs: []string{did}, Collections: c.colls}
			w := wantFor(t, alice, spec)
			var full map[string]string
			var fullBytes int64
			for _, strategy := range strategies {
				e := newEnv(t, net, spec)
				e.track("explicit", alice.DID())
				s := e.scheduler(func(o *backfill.Options) { o.Strategy = strategy; o.BlocksPerRequest = 16; o.BatchSize = 50 })
				host.ResetRequests()
				if err := s.Backfill(e.ctx, did); err != nil {
					t.Fatalf("%s: %v", strategy, err)
				}
				got := e.stored(alice.DID())
				if d := diffMaps(got, w); d != "" {
					t.Fatalf("%s: stored records differ from the PDS: %s", strategy, d)
				}
				if d := diffMaps(fold(t, e.events(0))[did], w); d != "" {
					t.Fatalf("%s: folded events differ from the PDS: %s", strategy, d)
				}
				assertValues(t, e, alice)
				if r := e.repo(alice.DID()); r.State != store.StateSynced || r.Rev != alice.Rev() || r.Data != alice.DataCID().String() {
					t.Fatalf("%s: repo %+v, want synced at %s", strategy, r, alice.Rev())
				}
				st := s.Stats()
				sparse := host.Requests(nsidGetRepo) == 0
				if sparse != (st.Sparse == 1) {
					t.Fatalf("%s: getRepo requests %d but Stats.Sparse %d", strategy, host.Requests(nsidGetRepo), st.Sparse)
				}
				switch {
				case strategy == backfill.StrategyFull && (sparse || host.Requests(nsidGetBlocks) != 0):
					t.Fatalf("full backfill made %v", host.RequestCounts())
				case strategy == backfill.StrategySparse && !sparse:
					t.Fatalf("sparse backfill made %v", host.RequestCounts())
				case strategy == backfill.StrategyAuto && c.autoSparse != nil && sparse != *c.autoSparse:
					t.Fatalf("auto chose sparse=%v, want %v (requests %v)", sparse, *c.autoSparse, host.RequestCounts())
				}
				if strategy == backfill.StrategyFull {
					full, fullBytes = got, st.BytesFetched
					continue
				}
				if d := diffMaps(got, full); d != "" {
					t.Fatalf("%s differs from full: %s", strategy, d)
				}
				t.Logf("%s: %d bytes in %d requests (full: %d bytes)", strategy, st.BytesFetched, st.Requests, fullBytes)
				if c.name == "one small collection" && sparse && st.BytesFetched*10 > fullBytes {
					t.Fatalf("%s fetched %d bytes for 3 records, full %d", strategy, st.BytesFetched, fullBytes)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestBackfill_SparseSignalMode(t *testing.T) {
	net := testnet.New(t)
	signalled := net.Account(t, "with.test", testnet.Records(collPost, 300), testnet.Records(collLike, 40), testnet.Records(collOther, 2))
	unsignalled := net.Account(t, "without.test", testnet.Records(collPost, 300), testnet.Records(collLike, 40))
	spec := filter.Spec{Signals: []string{collOther}, Collections: []string{collLike}}
	for _, strategy := range strategies {
		t.Run(string(strategy), func(t *testing.T) {
			e := newEnv(t, net, spec)
			e.track("signal", signalled.DID(), unsignalled.DID())
			s := e.scheduler(func(o *backfill.Options) { o.Strategy = strategy })
			signalled.Host().ResetRequests()
			if err := s.Backfill(e.ctx, signalled.DID().String()); err != nil {
				t.Fatal(err)
			}
			if d := diffMaps(e.stored(signalled.DID()), want(signalled, collLike)); d != "" {
				t.Fatalf("signalled repo: %s", d)
			}
			if err := s.Backfill(e.ctx, unsignalled.DID().String()); !errors.Is(err, backfill.ErrNotTracked) {
				t.Fatalf("repo without a signal: err = %v, want ErrNotTracked", err)
			}
			if n := len(e.stored(unsignalled.DID())); n != 0 || e.repo(unsignalled.DID()) != nil {
				t.Fatalf("repo without a signal kept %d records", n)
			}
			if strategy == backfill.StrategySparse {
				// The walk looked for a signal, and fetched no post.
				assertNoRecordServed(t, signalled.Host(), signalled, collPost)
				assertNoRecordServed(t, signalled.Host(), unsignalled, collPost)
			}
		})
	}
}

// assertNoRecordServed fails t if getBlocks served a record of the
// account's collection coll.
func assertNoRecordServed(t *testing.T, h *testnet.Host, a *testnet.Account, coll string) {
	t.Helper()
	byCID := map[cid.Cid]string{}
	for _, r := range a.Records() {
		byCID[r.CID] = r.Path()
	}
	for _, c := range h.ServedBlocks() {
		if p, ok := byCID[c]; ok && strings.HasPrefix(p, coll+"/") {
			t.Fatalf("getBlocks served %s", p)
		}
	}
}

func TestBackfill_SparseBlockFaults(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 300), testnet.Records(collOther, 3))
	host := alice.Host()
	var statuses []testnet.Record
	for _, r := range alice.Records() {
		if r.Collection == collOther {
			statuses = append(statuses, r)
		}
	}
	cases := []struct {
		name    string
		arm     func()
		wantErr error
		// wantCID is named in the error.
		wantCID cid.Cid
	}{
		{"record block missing", func() { host.OmitBlock(statuses[1].CID) }, backfill.ErrBlockMissing, statuses[1].CID},
		{"record block with a wrong hash", func() { host.CorruptBlock(statuses[1].CID) }, backfill.ErrBlockMismatch, statuses[1].CID},
		// The reference PDS answers 400 "Could not find cids" for a block it lacks.
		{"record block the host lacks", func() { host.LoseBlock(statuses[1].CID) }, backfill.ErrBlockMissing, statuses[1].CID},
		{"commit block missing", func() { host.OmitBlock(alice.CommitCID()) }, backfill.ErrBlockMissing, alice.CommitCID()},
		{"commit block with a wrong hash", func() { host.CorruptBlock(alice.CommitCID()) }, backfill.ErrBlockMismatch, alice.CommitCID()},
	}
	spec := filter.Spec{DIDs: []string{alice.DID().String()}, Collections: []string{collOther}}
	for _, c := range cases {
		for _, strategy := range []backfill.Strategy{backfill.StrategySparse, backfill.StrategyAuto} {
			t.Run(c.name+"/"+string(strategy), func(t *testing.T) {
				t.Cleanup(host.ClearFaults)
				e := newEnv(t, net, spec)
				e.track("explicit", alice.DID())
				// One record per batch and per request: the records before
				// the faulty one are written before it is met.
				s := e.scheduler(func(o *backfill.Options) { o.Strategy = strategy; o.BatchSize = 1; o.BlocksPerRequest = 1 })
				c.arm()
				err := s.Backfill(e.ctx, alice.DID().String())
				var be *backfill.Error
				if !errors.As(err, &be) || be.Kind != backfill.KindBlock || !errors.Is(err, c.wantErr) ||
					!strings.Contains(err.Error(), c.wantCID.String()) {
					t.Fatalf("err = %v, want kind %q wrapping %v and naming %s", err, backfill.KindBlock, c.wantErr, c.wantCID)
				}
				r := e.repo(alice.DID())
				if r.State != store.StateError || r.ErrorKind != backfill.KindBlock || r.Rev != "" {
					t.Fatalf("repo after the fault: %+v", r)
				}
				if _, ok := e.queued(alice.DID()); !ok {
					t.Fatal("repo not queued for a retry")
				}
				assertValues(t, e, alice)
				if _, ok := e.stored(alice.DID())[statuses[1].Path()]; ok && c.wantCID == statuses[1].CID {
					t.Fatal("the faulty record was stored")
				}

				// The retry: the host is fixed for a sparse retry; auto
				// fetches the repo whole after a block failure.
				if strategy == backfill.StrategySparse {
					host.ClearFaults()
				}
				host.ResetRequests()
				if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
					t.Fatalf("retry: %v", err)
				}
				if d := diffMaps(e.stored(alice.DID()), want(alice, collOther)); d != "" {
					t.Fatalf("after the retry: %s", d)
				}
				assertValues(t, e, alice)
				full := host.Requests(nsidGetRepo) == 1 && host.Requests(nsidGetBlocks) == 0
				if full != (strategy == backfill.StrategyAuto) {
					t.Fatalf("%s retry made %v", strategy, host.RequestCounts())
				}
			})
		}
	}
}

func TestBackfill_NoGetBlocksFallsBackToFull(t *testing.T) {
	net := testnet.New(t)
	alice := mixedAccount(t, net, "alice.test", 200)
	bob := mixedAccount(t, net, "bob.test", 200)
	host := alice.Host()
	host.DisableGetBlocks(true)
	spec := filter.Spec{DIDs: []string{alice.DID().String(), bob.DID().String()}, Collections: []string{collOther}}
	for _, strategy := range []backfill.Strategy{backfill.StrategySparse, backfill.StrategyAuto} {
		t.Run(string(strategy), func(t *testing.T) {
			e := newEnv(t, net, spec)
			e.track("explicit", alice.DID(), bob.DID())
			s := e.scheduler(func(o *backfill.Options) { o.Strategy = strategy })
			host.ResetRequests()
			for i, a := range []*testnet.Account{alice, bob} {
				if err := s.Backfill(e.ctx, a.DID().String()); err != nil {
					t.Fatal(err)
				}
				if d := diffMaps(e.stored(a.DID()), want(a, collOther)); d != "" {
					t.Fatalf("%s: %s", a.Handle(), d)
				}
				assertValues(t, e, a)
				// One 501, then the host is known not to serve getBlocks.
				if n, m := host.Requests(nsidGetBlocks), host.Requests(nsidGetRepo); n != 1 || m != int64(i+1) {
					t.Fatalf("after %s: %d getBlocks and %d getRepo requests, want 1 and %d", a.Handle(), n, m, i+1)
				}
			}
			if st := s.Stats(); st.Sparse != 0 || st.SparseFallbacks != 2 {
				t.Fatalf("stats %+v, want no sparse backfill and two fallbacks", st)
			}
		})
	}

	// A host that serves getBlocks but not getLatestCommit.
	host.DisableGetBlocks(false)
	e := newEnv(t, net, spec)
	e.track("explicit", alice.DID())
	s := e.scheduler(func(o *backfill.Options) { o.Strategy = backfill.StrategySparse })
	host.FailNext(nsidGetLatestCommit, 1, http.StatusNotImplemented)
	host.ResetRequests()
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	if d := diffMaps(e.stored(alice.DID()), want(alice, collOther)); d != "" {
		t.Fatal(d)
	}
	if st := s.Stats(); st.SparseFallbacks != 1 || host.Requests(nsidGetRepo) != 1 {
		t.Fatalf("without getLatestCommit: stats %+v, requests %v", st, host.RequestCounts())
	}
}

func TestBackfill_SparseResyncFetchesOnlyTheWantedChanges(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 300), testnet.Records(collOther, 20))
	host := alice.Host()
	e := newEnv(t, net, filter.Spec{DIDs: []string{alice.DID().String()}, Collections: []string{collOther}})
	e.track("explicit", alice.DID())
	s := e.scheduler(func(o *backfill.Options) { o.Strategy = backfill.StrategySparse; o.BlocksPerRequest = 8 })
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	after := e.lastEvent()

	var statuses, posts []testnet.Record
	for _, r := range alice.Records() {
		switch r.Collection {
		case collOther:
			statuses = append(statuses, r)
		case collPost:
			posts = append(posts, r)
		}
	}
	updated, err := alice.PutRecord(collOther, statuses[3].RKey, testnet.Post(collOther, "edited"))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.DeleteRecord(collOther, statuses[7].RKey); err != nil {
		t.Fatal(err)
	}
	created, err := alice.CreateRecord(collOther, testnet.Post(collOther, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.PutRecord(collPost, posts[5].RKey, testnet.Post(collPost, "edited post")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreatePosts(collPost, 30); err != nil {
		t.Fatal(err)
	}

	host.ResetRequests()
	e.track("explicit", alice.DID())
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ev := range e.events(after) {
		if ev.Kind != store.KindRecord || ev.Live || ev.Rev != alice.Rev() {
			t.Fatalf("unexpected event %+v", ev)
		}
		got[ev.Action.String()+" "+ev.Collection+"/"+ev.RKey] = fmt.Sprint(len(ev.CID) > 0)
	}
	wantEv := map[string]string{
		"update " + updated.Path():     "true",
		"delete " + statuses[7].Path(): "false",
		"create " + created.Path():     "true",
	}
	if fmt.Sprint(got) != fmt.Sprint(wantEv) {
		t.Fatalf("resync events = %v, want %v", got, wantEv)
	}
	if d := diffMaps(e.stored(alice.DID()), want(alice, collOther)); d != "" {
		t.Fatalf("stored differs: %s", d)
	}
	assertValues(t, e, alice)

	// The resync fetched the record blocks of the two changed statuses and
	// no other record: not the unchanged statuses, not a post.
	byCID := map[cid.Cid]string{}
	for _, r := range alice.Records() {
		byCID[r.CID] = r.Path()
	}
	var served []string
	for _, c := range host.ServedBlocks() {
		if p, ok := byCID[c]; ok {
			served = append(served, p)
		}
	}
	if w := []string{updated.Path(), created.Path()}; fmt.Sprint(sorted(served)) != fmt.Sprint(sorted(w)) {
		t.Fatalf("resync fetched records %v, want %v", served, w)
	}
	if n := host.Requests(nsidGetRepo); n != 0 {
		t.Fatalf("resync made %d getRepo requests", n)
	}
}

func sorted(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return out
}

func TestBackfill_AutoChoosesByWhatTheRepoHolds(t *testing.T) {
	net := testnet.New(t)
	cases := []struct {
		name     string
		records  []testnet.AccountOption
		colls    []string
		sparse   bool
		fallback bool
		noSparse bool // no request of a sparse walk at all
	}{
		{name: "a narrow collection is walked", records: []testnet.AccountOption{testnet.Records(collPost, 1500), testnet.Records(collOther, 3)},
			colls: []string{collOther}, sparse: true},
		{name: "most of the repo is fetched whole", records: []testnet.AccountOption{testnet.Records(collPost, 900), testnet.Records(collLike, 100)},
			colls: []string{collPost}, fallback: true},
		{name: "a repo of stored collections only is fetched whole", records: []testnet.AccountOption{testnet.Records(collOther, 30)},
			colls: []string{collOther}, fallback: true},
		{name: "a filter storing everything fetches whole", records: []testnet.AccountOption{testnet.Records(collOther, 30), testnet.Records(collPost, 30)},
			colls: nil, noSparse: true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := net.Account(t, fmt.Sprintf("auto%d.test", i), c.records...)
			spec := filter.Spec{DIDs: []string{a.DID().String()}, Collections: c.colls}
			e := newEnv(t, net, spec)
			e.track("explicit", a.DID())
			s := e.scheduler(nil) // the default: auto
			a.Host().ResetRequests()
			if err := s.Backfill(e.ctx, a.DID().String()); err != nil {
				t.Fatal(err)
			}
			if d := diffMaps(e.stored(a.DID()), wantFor(t, a, spec)); d != "" {
				t.Fatal(d)
			}
			st, reqs := s.Stats(), a.Host().RequestCounts()
			if (st.Sparse == 1) != c.sparse || (st.SparseFallbacks == 1) != c.fallback {
				t.Fatalf("stats %+v (requests %v), want sparse %v, fallback %v", st, reqs, c.sparse, c.fallback)
			}
			if c.noSparse && (reqs[nsidGetBlocks] != 0 || reqs["com.atproto.repo.describeRepo"] != 0) {
				t.Fatalf("requests %v, want getRepo only", reqs)
			}
		})
	}
}

func TestBackfill_SparseRequestsAreRateLimitedAndVerified(t *testing.T) {
	net := testnet.New(t)
	alice := mixedAccount(t, net, "alice.test", 100)
	bob := net.Account(t, "bob.test")
	host := alice.Host()
	spec := filter.Spec{DIDs: []string{alice.DID().String()}, Collections: []string{collOther}}

	t.Run("429 pauses the host", func(t *testing.T) {
		e := newEnv(t, net, spec)
		e.track("explicit", alice.DID())
		s := e.scheduler(func(o *backfill.Options) { o.Strategy = backfill.StrategySparse })
		host.RateLimitNext(nsidGetBlocks, 1, 30*time.Second)
		host.ResetRequests()
		err := s.Backfill(e.ctx, alice.DID().String())
		var be *backfill.Error
		if !errors.As(err, &be) || be.Kind != backfill.KindRateLimited || !errors.Is(err, backfill.ErrRateLimited) {
			t.Fatalf("err = %v, want a rate limit", err)
		}
		if wait := time.Until(be.Retry); wait < 25*time.Second || wait > 35*time.Second {
			t.Fatalf("retry in %v, want about 30s", wait)
		}
		if r := e.repo(alice.DID()); r.Retries != 0 || len(e.stored(alice.DID())) != 0 {
			t.Fatalf("rate limit counted as a retry or stored records: %+v", r)
		}
		// The host is paused: the next attempt makes no request.
		before := host.Requests("")
		if err := s.Backfill(e.ctx, alice.DID().String()); !errors.Is(err, backfill.ErrRateLimited) {
			t.Fatalf("second attempt: err = %v, want a rate limit", err)
		}
		if n := host.Requests(""); n != before {
			t.Fatalf("paused host got %d more requests", n-before)
		}
	})

	t.Run("a commit signed by another key is refused", func(t *testing.T) {
		e := newEnv(t, net, spec)
		e.track("explicit", alice.DID())
		e.res.Put(&resolver.Identity{DID: alice.DID(), Handle: alice.Handle(), PDS: host.URL(), SigningKey: bob.PublicKey()})
		s := e.scheduler(func(o *backfill.Options) { o.Strategy = backfill.StrategySparse })
		host.ResetRequests()
		var be *backfill.Error
		if err := s.Backfill(e.ctx, alice.DID().String()); !errors.As(err, &be) || be.Kind != backfill.KindVerify {
			t.Fatalf("err = %v, want kind verify", err)
		}
		if n := len(e.stored(alice.DID())); n != 0 || host.Requests(nsidGetRepo) != 0 {
			t.Fatalf("%d records stored, requests %v", n, host.RequestCounts())
		}
	})
}

func TestParseStrategy(t *testing.T) {
	for in, want := range map[string]backfill.Strategy{"": backfill.StrategyAuto, "auto": backfill.StrategyAuto,
		"full": backfill.StrategyFull, "sparse": backfill.StrategySparse} {
		if got, err := backfill.ParseStrategy(in); err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := backfill.ParseStrategy("Sparse"); err == nil || !strings.Contains(err.Error(), `unknown strategy "Sparse"`) {
		t.Errorf("ParseStrategy(Sparse): err = %v", err)
	}
	e := newEnv(t, testnet.New(t), filter.Spec{})
	if _, err := backfill.New(e.options(func(o *backfill.Options) { o.Strategy = "partial" })); err == nil ||
		!strings.Contains(err.Error(), `unknown strategy "partial"`) {
		t.Errorf("New with an unknown strategy: err = %v", err)
	}
}

// moveOnTransport runs fn before the first request whose query names
// target: a write that happens while a sparse walk is under way.
type moveOnTransport struct {
	target string
	once   sync.Once
	fn     func()
}

func (m *moveOnTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.Contains(req.URL.RawQuery, m.target) {
		m.once.Do(m.fn)
	}
	return http.DefaultTransport.RoundTrip(req)
}

func TestBackfill_SparseWalkStartsAgainWhenTheRepoMovesOn(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 200), testnet.Records(collOther, 3))
	host := alice.Host()
	oldRoot := alice.DataCID()
	// When the walk asks for the MST root, alice writes a status and the
	// host drops the old root, as a PDS collecting an old commit's blocks.
	mover := &moveOnTransport{target: oldRoot.String(), fn: func() {
		if _, err := alice.CreateRecord(collOther, testnet.Post(collOther, "written mid-walk")); err != nil {
			t.Error(err)
		}
		host.OmitBlock(oldRoot)
	}}
	t.Cleanup(host.ClearFaults)
	e := newEnv(t, net, filter.Spec{DIDs: []string{alice.DID().String()}, Collections: []string{collOther}})
	e.track("explicit", alice.DID())
	s := e.scheduler(func(o *backfill.Options) {
		o.Strategy = backfill.StrategySparse
		o.HTTPClient = &http.Client{Transport: mover}
	})
	host.ResetRequests()
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	if d := diffMaps(e.stored(alice.DID()), want(alice, collOther)); d != "" || len(e.stored(alice.DID())) != 4 {
		t.Fatalf("stored records differ from the PDS after it moved on: %s", d)
	}
	if r := e.repo(alice.DID()); r.Rev != alice.Rev() {
		t.Fatalf("synced at rev %s, want the new %s", r.Rev, alice.Rev())
	}
	// getLatestCommit twice: at the start, and to see the repo moved on.
	if n := host.Requests(nsidGetLatestCommit); n != 2 || host.Requests(nsidGetRepo) != 0 {
		t.Fatalf("requests %v", host.RequestCounts())
	}
}
