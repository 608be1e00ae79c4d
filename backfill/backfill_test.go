package backfill_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

const (
	collPost  = "app.bsky.feed.post"
	collLike  = "app.bsky.feed.like"
	collOther = "xyz.statusphere.status"
)

// sizeFromEnv reads the repo count and size of the big test:
// CISTERN_BACKFILL_REPOS and CISTERN_BACKFILL_RECORDS, default 100×200
// (the 100×1000 with CISTERN_BACKFILL_RECORDS=1000).
func sizeFromEnv(t *testing.T) (repos, records int) {
	repos, records = 100, 200
	if testing.Short() {
		repos, records = 20, 50
	}
	if v, err := strconv.Atoi(os.Getenv("CISTERN_BACKFILL_REPOS")); err == nil && v > 0 {
		repos = v
	}
	if v, err := strconv.Atoi(os.Getenv("CISTERN_BACKFILL_RECORDS")); err == nil && v > 0 {
		records = v
	}
	return repos, records
}

func TestBackfill_StoresExactlyThePDSRecords(t *testing.T) {
	nRepos, nRecords := sizeFromEnv(t)
	net := testnet.New(t, testnet.WithHosts(2))
	start := time.Now()
	var accts []*testnet.Account
	var dids []string
	for i := range nRepos {
		a, err := net.Host(i%2).CreateAccount("",
			testnet.Records(collPost, nRecords/2), testnet.Records(collLike, nRecords-nRecords/2),
			testnet.Records(collOther, 7))
		if err != nil {
			t.Fatal(err)
		}
		accts = append(accts, a)
		dids = append(dids, a.DID().String())
	}
	t.Logf("built %d repos of %d records in %v", nRepos, nRecords+7, time.Since(start))

	e := newEnv(t, net, filter.Spec{DIDs: dids, Collections: []string{collPost, collLike}})
	for _, a := range accts {
		e.track("explicit", a.DID())
	}
	s := e.scheduler(func(o *backfill.Options) { o.BatchSize = 128 })
	start = time.Now()
	run(t, s)
	s.Kick()
	waitUntil(t, "every repo synced", func() bool { return s.Stats().Completed == int64(nRepos) })
	t.Logf("backfilled in %v: %+v", time.Since(start), s.Stats())

	folded := fold(t, e.events(0))
	for _, a := range accts {
		w := want(a, collPost, collLike)
		if got := e.stored(a.DID()); diffMaps(got, w) != "" {
			t.Fatalf("%s: stored records differ from the PDS: %s", a.DID(), diffMaps(got, w))
		}
		if got := folded[a.DID().String()]; diffMaps(got, w) != "" {
			t.Fatalf("%s: folded events differ from the PDS: %s", a.DID(), diffMaps(got, w))
		}
		r := e.repo(a.DID())
		if r.State != store.StateSynced || r.Rev != a.Rev() || r.Data != a.DataCID().String() {
			t.Fatalf("%s: state %v rev %q data %q, want synced %q %q", a.DID(), r.State, r.Rev, r.Data, a.Rev(), a.DataCID())
		}
		if r.PDS != a.Host().URL() || r.SigningKey != a.PublicKey().Multibase() || r.Handle != a.Handle().String() {
			t.Fatalf("%s: identity not recorded: %+v", a.DID(), r)
		}
		if _, ok := e.queued(a.DID()); ok {
			t.Fatalf("%s: still queued after sync", a.DID())
		}
	}
	if got, wantN := s.Stats().RecordsWritten, int64(nRepos*nRecords); got != wantN {
		t.Fatalf("RecordsWritten = %d, want %d", got, wantN)
	}
}

func TestBackfill_ResyncEmitsOnlyTheDifference(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 50), testnet.Records(collLike, 5))
	e := newEnv(t, net, filter.Spec{DIDs: []string{alice.DID().String()}, Collections: []string{collPost}})
	e.track("explicit", alice.DID())
	s := e.scheduler(func(o *backfill.Options) { o.BatchSize = 7 })
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	after := e.lastEvent()

	recs := alice.Records() // likes first, then posts
	var posts []testnet.Record
	for _, r := range recs {
		if r.Collection == collPost {
			posts = append(posts, r)
		}
	}
	updated, err := alice.PutRecord(collPost, posts[3].RKey, testnet.Post(collPost, "edited"))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.DeleteRecord(collPost, posts[7].RKey); err != nil {
		t.Fatal(err)
	}
	created, err := alice.CreateRecord(collPost, testnet.Post(collPost, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateRecord(collLike, testnet.Post(collLike, "not stored")); err != nil {
		t.Fatal(err)
	}
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
		"update " + updated.Path():  "true",
		"delete " + posts[7].Path(): "false",
		"create " + created.Path():  "true",
	}
	if fmt.Sprint(got) != fmt.Sprint(wantEv) {
		t.Fatalf("resync events = %v, want %v", got, wantEv)
	}
	if d := diffMaps(e.stored(alice.DID()), want(alice, collPost)); d != "" {
		t.Fatalf("stored differs: %s", d)
	}
}

func TestBackfill_SecondRunEmitsNothing(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 30))
	e := newEnv(t, net, filter.Spec{DIDs: []string{alice.DID().String()}})
	e.track("explicit", alice.DID())
	s := e.scheduler(nil)
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	after := e.lastEvent()
	before := e.repo(alice.DID())
	e.track("explicit", alice.DID())
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	if evs := e.events(after); len(evs) != 0 {
		t.Fatalf("second backfill emitted %d events, first %+v", len(evs), evs[0])
	}
	r := e.repo(alice.DID())
	if r.State != store.StateSynced || r.Rev != before.Rev || r.Data != before.Data {
		t.Fatalf("state after second run: %+v", r)
	}
}

func TestBackfill_CrashMidBackfillIsRedoneWithoutDuplicates(t *testing.T) {
	for _, k := range []int64{0, 1, 2, 4} {
		t.Run(fmt.Sprintf("crash after %d writes", k), func(t *testing.T) {
			net := testnet.New(t)
			alice := net.Account(t, "alice.test", testnet.Records(collPost, 40), testnet.Records(collLike, 13))
			e := newEnv(t, net, filter.Spec{DIDs: []string{alice.DID().String()}})
			e.track("explicit", alice.DID())

			// Writes: 1 start, then batches of 10 (6 with the final state).
			fw := &failingWriter{w: e.w, n: k}
			crashing := e.scheduler(func(o *backfill.Options) { o.Writer = fw; o.BatchSize = 10 })
			if err := crashing.Backfill(e.ctx, alice.DID().String()); !errors.Is(err, errCrash) {
				t.Fatalf("Backfill through a failing writer = %v, want the crash", err)
			}
			if _, ok := e.queued(alice.DID()); !ok {
				t.Fatal("repo not queued after the crash")
			}
			if r := e.repo(alice.DID()); r.State == store.StateSynced || r.Rev != "" {
				t.Fatalf("repo marked done after a crash: %+v", r)
			}

			s := e.scheduler(func(o *backfill.Options) { o.BatchSize = 10 })
			if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
				t.Fatal(err)
			}
			w := want(alice, collPost, collLike)
			if d := diffMaps(e.stored(alice.DID()), w); d != "" {
				t.Fatalf("stored differs: %s", d)
			}
			evs := e.events(0)
			if len(evs) != len(w) {
				t.Fatalf("%d events, want exactly %d creates", len(evs), len(w))
			}
			if d := diffMaps(fold(t, evs)[alice.DID().String()], w); d != "" {
				t.Fatalf("folded events differ: %s", d)
			}
			if r := e.repo(alice.DID()); r.State != store.StateSynced || r.Rev != alice.Rev() {
				t.Fatalf("repo after redo: %+v", r)
			}
		})
	}
}

func TestBackfill_RateLimitPausesOnlyThatHost(t *testing.T) {
	net := testnet.New(t, testnet.WithHosts(2))
	var slow, fast []*testnet.Account
	for i := range 3 {
		slow = append(slow, must(net.Host(0).CreateAccount(fmt.Sprintf("slow%d.test", i), testnet.Records(collPost, 5))))
		fast = append(fast, must(net.Host(1).CreateAccount(fmt.Sprintf("fast%d.test", i), testnet.Records(collPost, 5))))
	}
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	net.Host(0).RateLimitNext("com.atproto.sync.getRepo", 100, 30*time.Second)
	net.Host(0).ResetRequests()
	net.Host(1).ResetRequests()
	for _, a := range append(append([]*testnet.Account{}, slow...), fast...) {
		e.track("network", a.DID())
	}
	s := e.scheduler(func(o *backfill.Options) { o.Concurrency = 1 }) // one at a time: later repos see the pause
	start := time.Now()
	run(t, s)
	waitUntil(t, "fast host's repos synced", func() bool {
		for _, a := range fast {
			if r := e.repo(a.DID()); r == nil || r.State != store.StateSynced {
				return false
			}
		}
		for _, a := range slow {
			if r := e.repo(a.DID()); r == nil || r.ErrorKind != backfill.KindRateLimited {
				return false
			}
		}
		return true
	})
	if n := net.Host(0).Requests("com.atproto.sync.getRepo"); n != 1 {
		t.Fatalf("paused host got %d getRepo requests, want 1 (the one answered 429)", n)
	}
	if n := net.Host(1).Requests("com.atproto.sync.getRepo"); n != 3 {
		t.Fatalf("other host got %d getRepo requests, want 3", n)
	}
	for _, a := range slow {
		r := e.repo(a.DID())
		if r.Retries != 0 || r.NextAttempt.Before(start.Add(29*time.Second)) || r.NextAttempt.After(time.Now().Add(31*time.Second)) {
			t.Fatalf("%s: retries %d next %v, want 0 and about now+30s", a.Handle(), r.Retries, r.NextAttempt)
		}
		if due, ok := e.queued(a.DID()); !ok || !due.Equal(r.NextAttempt) {
			t.Fatalf("%s: queued %v at %v, want at NextAttempt %v", a.Handle(), ok, due, r.NextAttempt)
		}
	}
	if st := s.Stats(); st.HostsRateLimited != 1 || st.RateLimited != 3 {
		t.Fatalf("stats %+v, want 1 host limited and 3 deferrals", st)
	}
}

func TestBackfill_TransientFailuresBackOff(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 300))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	s := e.scheduler(nil)
	did := alice.DID().String()

	check := func(kind string, retries int, minWait, maxWait time.Duration, err error) {
		t.Helper()
		var be *backfill.Error
		if !errors.As(err, &be) || be.Kind != kind {
			t.Fatalf("err = %v, want a backfill.Error of kind %q", err, kind)
		}
		r := e.repo(alice.DID())
		now := time.Now()
		if r.State != store.StateError || r.ErrorKind != kind || r.Retries != retries || r.LastError == "" {
			t.Fatalf("repo %+v, want error %q retries %d", r, kind, retries)
		}
		if r.NextAttempt.Before(now.Add(minWait-time.Second)) || r.NextAttempt.After(now.Add(maxWait)) {
			t.Fatalf("NextAttempt in %v, want within [%v, %v]", r.NextAttempt.Sub(now), minWait, maxWait)
		}
		if due, ok := e.queued(alice.DID()); !ok || !due.Equal(r.NextAttempt) {
			t.Fatalf("queued %v at %v, want at %v", ok, due, r.NextAttempt)
		}
		if len(e.stored(alice.DID())) != 0 {
			t.Fatal("records stored by a failed backfill")
		}
	}

	alice.Host().FailNext("com.atproto.sync.getRepo", 1, 503)
	check(backfill.KindHTTP, 1, 48*time.Second, 72*time.Second, s.Backfill(e.ctx, did))
	alice.Host().FailNext("com.atproto.sync.getRepo", 1, 500)
	check(backfill.KindHTTP, 2, 96*time.Second, 144*time.Second, s.Backfill(e.ctx, did))
	alice.Host().TruncateGetRepo(1, 1000)
	check(backfill.KindTruncated, 3, 192*time.Second, 288*time.Second, s.Backfill(e.ctx, did))

	// Success resets the error.
	if err := s.Backfill(e.ctx, did); err != nil {
		t.Fatal(err)
	}
	if r := e.repo(alice.DID()); r.State != store.StateSynced || r.Retries != 0 || r.ErrorKind != "" || !r.NextAttempt.IsZero() {
		t.Fatalf("repo after success: %+v", r)
	}
}

func TestBackfill_Timeout(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 300))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	alice.Host().SlowGetRepo(50*time.Millisecond, 1024)
	s := e.scheduler(func(o *backfill.Options) { o.FetchTimeout = 100 * time.Millisecond })
	var be *backfill.Error
	if err := s.Backfill(e.ctx, alice.DID().String()); !errors.As(err, &be) || be.Kind != backfill.KindTimeout {
		t.Fatalf("err = %v, want kind timeout", err)
	}
}

func TestBackfill_TooLarge(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 300))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	s := e.scheduler(func(o *backfill.Options) { o.MaxRepoSize = 4096 })
	var be *backfill.Error
	if err := s.Backfill(e.ctx, alice.DID().String()); !errors.As(err, &be) || be.Kind != backfill.KindTooLarge {
		t.Fatalf("err = %v, want kind too_large", err)
	}
	if r := e.repo(alice.DID()); time.Until(r.NextAttempt) < 47*time.Minute {
		t.Fatalf("too large retried in %v, want about MaxBackoff", time.Until(r.NextAttempt))
	}
}

func TestBackfill_BadSignature(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 10))
	bob := net.Account(t, "bob.test")
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	// The resolver serves bob's key for alice, and still does after a purge.
	e.res.Put(&resolver.Identity{DID: alice.DID(), Handle: alice.Handle(), PDS: alice.Host().URL(), SigningKey: bob.PublicKey()})
	s := e.scheduler(nil)
	var be *backfill.Error
	if err := s.Backfill(e.ctx, alice.DID().String()); !errors.As(err, &be) || be.Kind != backfill.KindVerify {
		t.Fatalf("err = %v, want kind verify", err)
	}
	if len(e.stored(alice.DID())) != 0 {
		t.Fatal("records stored from an unverified repo")
	}

	// A key rotated since it was cached, with a new handle: the purge and
	// second resolve fix it, and the new handle is in the log.
	before := e.lastEvent()
	newHandle := syntax.Handle("alice-rotated.test")
	rot := &rotatingResolver{Static: e.res, fresh: &resolver.Identity{DID: alice.DID(), Handle: newHandle, PDS: alice.Host().URL(), SigningKey: alice.PublicKey()}}
	s = e.scheduler(func(o *backfill.Options) { o.Resolver = rot })
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if rot.purged.Load() != 1 {
		t.Fatalf("purged %d times, want 1", rot.purged.Load())
	}
	if r := e.repo(alice.DID()); r.SigningKey != alice.PublicKey().Multibase() || r.State != store.StateSynced || r.Handle != newHandle.String() {
		t.Fatalf("repo after rotation: %+v", r)
	}
	var handles []string
	for _, ev := range e.events(before) {
		if ev.Kind == store.KindIdentity {
			handles = append(handles, ev.Handle)
		}
	}
	if len(handles) != 1 || handles[0] != newHandle.String() {
		t.Fatalf("identity events %q, want [%s]", handles, newHandle)
	}
}

func TestBackfill_RepoNotFoundDeletesTheRepo(t *testing.T) {
	for _, how := range []string{"getRepo", "resolver"} {
		t.Run(how, func(t *testing.T) {
			net := testnet.New(t)
			alice := net.Account(t, "alice.test", testnet.Records(collPost, 25))
			e := newEnv(t, net, filter.Spec{FullNetwork: true})
			e.track("network", alice.DID())
			s := e.scheduler(func(o *backfill.Options) { o.BatchSize = 10 })
			if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
				t.Fatal(err)
			}
			after := e.lastEvent()
			switch how {
			case "getRepo":
				if _, err := alice.Delete(); err != nil {
					t.Fatal(err)
				}
			case "resolver":
				e.res.Remove(alice.DID())
			}
			e.track("network", alice.DID())
			for range 2 { // the second run finds nothing more to do
				if err := s.Backfill(e.ctx, alice.DID().String()); !errors.Is(err, backfill.ErrRepoNotFound) {
					t.Fatalf("err = %v, want ErrRepoNotFound", err)
				}
			}
			if n := len(e.stored(alice.DID())); n != 0 {
				t.Fatalf("%d records left", n)
			}
			evs := e.events(after)
			deletes, accounts := 0, 0
			for _, ev := range evs {
				switch {
				case ev.Kind == store.KindRecord && ev.Action == store.ActionDelete:
					deletes++
				case ev.Kind == store.KindAccount && !ev.Active && ev.Status == "deleted":
					accounts++
				default:
					t.Fatalf("unexpected event %+v", ev)
				}
			}
			if deletes != 25 || accounts != 1 {
				t.Fatalf("%d deletes and %d account events, want 25 and 1", deletes, accounts)
			}
			if evs[len(evs)-1].Kind != store.KindAccount {
				t.Fatal("account event is not last")
			}
			if r := e.repo(alice.DID()); r.State != store.StateDeleted || r.Status != "deleted" {
				t.Fatalf("repo %+v, want deleted", r)
			}
			if _, ok := e.queued(alice.DID()); ok {
				t.Fatal("deleted repo still queued")
			}
		})
	}
}

func TestBackfill_InactiveAccounts(t *testing.T) {
	for _, tc := range []struct {
		status string
		state  store.RepoState
		do     func(a *testnet.Account) (int64, error)
	}{
		{"deactivated", store.StateDeactivated, (*testnet.Account).Deactivate},
		{"takendown", store.StateTakendown, (*testnet.Account).Takedown},
		{"suspended", store.StateSuspended, (*testnet.Account).Suspend},
	} {
		t.Run(tc.status, func(t *testing.T) {
			net := testnet.New(t)
			alice := net.Account(t, "alice.test", testnet.Records(collPost, 5))
			e := newEnv(t, net, filter.Spec{FullNetwork: true})
			e.track("network", alice.DID())
			s := e.scheduler(nil)
			if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
				t.Fatal(err)
			}
			after := e.lastEvent()
			if _, err := tc.do(alice); err != nil {
				t.Fatal(err)
			}
			alice.Host().ResetRequests()
			for range 2 {
				e.track("network", alice.DID())
				var ie *backfill.InactiveError
				err := s.Backfill(e.ctx, alice.DID().String())
				if !errors.As(err, &ie) || ie.Status != tc.status || !errors.Is(err, backfill.ErrRepoInactive) {
					t.Fatalf("err = %v, want InactiveError %q", err, tc.status)
				}
				if _, ok := e.queued(alice.DID()); ok {
					t.Fatal("inactive repo still queued")
				}
			}
			if n := alice.Host().Requests("com.atproto.sync.getRepo"); n != 2 {
				t.Fatalf("%d getRepo requests, want 2 (no blind retries)", n)
			}
			evs := e.events(after)
			if len(evs) != 1 || evs[0].Kind != store.KindAccount || evs[0].Active || evs[0].Status != tc.status {
				t.Fatalf("events %+v, want one account event %q", evs, tc.status)
			}
			r := e.repo(alice.DID())
			if r.State != tc.state || r.Status != tc.status || r.Retries != 0 {
				t.Fatalf("repo %+v", r)
			}
			if n := len(e.stored(alice.DID())); n != 5 {
				t.Fatalf("%d records kept, want 5", n)
			}
		})
	}
}

func TestBackfill_SignalMode(t *testing.T) {
	net := testnet.New(t)
	withSignal := net.Account(t, "with.test", testnet.Records(collOther, 2), testnet.Records(collPost, 10))
	without := net.Account(t, "without.test", testnet.Records(collPost, 10))
	explicit := net.Account(t, "explicit.test", testnet.Records(collPost, 3))
	e := newEnv(t, net, filter.Spec{Signals: []string{collOther}, DIDs: []string{explicit.DID().String()},
		Collections: []string{collPost}})
	e.track("signal", withSignal.DID(), without.DID())
	e.track("explicit", explicit.DID())
	s := e.scheduler(nil)

	if err := s.Backfill(e.ctx, withSignal.DID().String()); err != nil {
		t.Fatal(err)
	}
	if d := diffMaps(e.stored(withSignal.DID()), want(withSignal, collPost)); d != "" {
		t.Fatalf("signalled repo: %s", d)
	}
	if err := s.Backfill(e.ctx, explicit.DID().String()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.stored(explicit.DID())); n != 3 {
		t.Fatalf("explicit repo without a signal: %d records, want 3", n)
	}

	after := e.lastEvent()
	if err := s.Backfill(e.ctx, without.DID().String()); !errors.Is(err, backfill.ErrNotTracked) {
		t.Fatalf("err = %v, want ErrNotTracked", err)
	}
	if r := e.repo(without.DID()); r != nil {
		t.Fatalf("untracked repo state kept: %+v", r)
	}
	if _, ok := e.queued(without.DID()); ok {
		t.Fatal("untracked repo still queued")
	}
	if n := len(e.stored(without.DID())) + len(e.events(after)); n != 0 {
		t.Fatalf("%d records or events of an untracked repo", n)
	}

	// The signal goes away: the repo is untracked and its records deleted.
	for _, r := range withSignal.Records() {
		if r.Collection == collOther {
			if err := withSignal.DeleteRecord(r.Collection, r.RKey); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.track("signal", withSignal.DID())
	if err := s.Backfill(e.ctx, withSignal.DID().String()); !errors.Is(err, backfill.ErrNotTracked) {
		t.Fatalf("err = %v, want ErrNotTracked", err)
	}
	if n := len(e.stored(withSignal.DID())); n != 0 {
		t.Fatalf("%d records left", n)
	}
	if got := fold(t, e.events(0))[withSignal.DID().String()]; len(got) != 0 {
		t.Fatalf("folded events still hold %d records", len(got))
	}

	// Excluded DIDs are never stored.
	e.setFilter(filter.Spec{DIDs: []string{explicit.DID().String()}, Excludes: []string{explicit.DID().String()}})
	if err := s.Backfill(e.ctx, explicit.DID().String()); !errors.Is(err, backfill.ErrNotTracked) {
		t.Fatalf("excluded: err = %v, want ErrNotTracked", err)
	}
	if n := len(e.stored(explicit.DID())); n != 0 || e.repo(explicit.DID()) != nil {
		t.Fatalf("excluded repo kept %d records", n)
	}
}

func TestBackfill_NarrowedFilterDeletesCollections(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 10), testnet.Records(collLike, 4))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	s := e.scheduler(nil)
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	after := e.lastEvent()
	e.setFilter(filter.Spec{FullNetwork: true, Collections: []string{collPost}})
	e.track("network", alice.DID())
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	evs := e.events(after)
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4 deletes", len(evs))
	}
	for _, ev := range evs {
		if ev.Action != store.ActionDelete || ev.Collection != collLike {
			t.Fatalf("unexpected %+v", ev)
		}
	}
	// Widened again: the likes come back as creates.
	e.setFilter(filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	if d := diffMaps(e.stored(alice.DID()), want(alice, collPost, collLike)); d != "" {
		t.Fatal(d)
	}
}

func TestBackfill_OnBackfilledHook(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 5))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	fail := true
	var seen []string
	s := e.scheduler(func(o *backfill.Options) {
		o.OnBackfilled = func(ctx context.Context, did, rev string, data cid.Cid) error {
			r := e.repo(syntax.DID(did))
			if _, ok := e.queued(syntax.DID(did)); !ok || r.State != store.StateBackfilling || r.Rev != rev || r.Data != data.String() {
				t.Errorf("hook sees repo %+v (queued %v)", r, ok)
			}
			seen = append(seen, rev)
			if fail {
				return errors.New("drain failed")
			}
			return nil
		}
	})
	var be *backfill.Error
	if err := s.Backfill(e.ctx, alice.DID().String()); !errors.As(err, &be) || be.Kind != backfill.KindHook {
		t.Fatalf("err = %v, want kind hook", err)
	}
	if r := e.repo(alice.DID()); r.State != store.StateError || r.Retries != 1 {
		t.Fatalf("repo %+v", r)
	}
	fail = false
	if err := s.Backfill(e.ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[1] != alice.Rev() {
		t.Fatalf("hook calls %v", seen)
	}
	// The hook owns the last step: still backfilling and queued.
	if r := e.repo(alice.DID()); r.State != store.StateBackfilling || r.Retries != 0 {
		t.Fatalf("repo %+v", r)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A direct Backfill of a DID the store has never seen reports its outcome
// as for a tracked repo: not found on the network is ErrRepoNotFound, and a
// failure is recorded on a new state (not dropped as if the repo had been
// untracked meanwhile).
func TestBackfill_UnknownDIDOutcomes(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 3))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	s := e.scheduler(nil)

	e.res.Remove(alice.DID())
	if err := s.Backfill(e.ctx, alice.DID().String()); !errors.Is(err, backfill.ErrRepoNotFound) {
		t.Fatalf("not on the network: err = %v, want ErrRepoNotFound", err)
	}

	bob := net.Account(t, "bob.test", testnet.Records(collPost, 3))
	e.publish(bob)
	net.Host(0).FailNext("com.atproto.sync.getRepo", 1, 500)
	var be *backfill.Error
	if err := s.Backfill(e.ctx, bob.DID().String()); !errors.As(err, &be) {
		t.Fatalf("failed fetch: err = %v, want *backfill.Error", err)
	}
	if r := e.repo(bob.DID()); r.State != store.StateError || r.Retries != 1 {
		t.Fatalf("after a failed fetch: %+v", r)
	}
}

// TestBackfill_FailureEmitsARepoEvent: each failed attempt leaves a repo
// event in the log (state "error" and the reason), so that consumers see a
// repo whose sync failed; a rate limit, which is no failure, leaves none.
func TestBackfill_FailureEmitsARepoEvent(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 3))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", alice.DID())
	s := e.scheduler(nil)
	did := alice.DID().String()

	repoEvents := func(after uint64) []*store.Event {
		var out []*store.Event
		for _, ev := range e.events(after) {
			if ev.Kind == store.KindRepo {
				out = append(out, ev)
			}
		}
		return out
	}
	for _, tt := range []struct {
		name   string
		fault  func()
		events int
		kind   string
	}{
		{"HTTP 502", func() { alice.Host().FailNext("com.atproto.sync.getRepo", 1, 502) }, 1, backfill.KindHTTP},
		{"truncated CAR", func() { alice.Host().TruncateGetRepo(1, 100) }, 1, backfill.KindTruncated},
		{"rate limited", func() { alice.Host().RateLimitNext("com.atproto.sync.getRepo", 1, time.Second) }, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.lastEvent()
			tt.fault()
			_ = s.Backfill(e.ctx, did)
			evs := repoEvents(before)
			if len(evs) != tt.events {
				t.Fatalf("%d repo events, want %d", len(evs), tt.events)
			}
			if tt.events == 0 {
				return
			}
			ev, r := evs[0], e.repo(alice.DID())
			if ev.DID != did || ev.Status != "error" || !strings.HasPrefix(ev.Error, tt.kind+": ") || ev.Error != r.ErrorKind+": "+r.LastError {
				t.Fatalf("repo event %+v; repo %+v", ev, r)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for err := s.Backfill(e.ctx, did); err != nil; err = s.Backfill(e.ctx, did) {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the host's pause
	}
	if evs := repoEvents(0); len(evs) != 2 {
		t.Fatalf("%d repo events after a success, want the 2 failures only", len(evs))
	}
}
