package backfill_test

import (
	"testing"
	"time"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

// Repos that failed because their PDS was down are retried as soon as a
// request to that PDS succeeds again, not after their backoff (an hour
// here); repos of another host that is still down keep theirs.
func TestRecovery_HostBackRetriesItsFailedRepos(t *testing.T) {
	net := testnet.New(t, testnet.WithHosts(2))
	down, other := net.Host(0), net.Host(1)
	var accts []*testnet.Account
	for _, h := range []string{"alice.test", "bob.test", "carol.test"} {
		a, err := down.CreateAccount(h, testnet.Records(collPost, 5))
		if err != nil {
			t.Fatal(err)
		}
		accts = append(accts, a)
	}
	dave, err := other.CreateAccount("dave.test", testnet.Records(collPost, 5))
	if err != nil {
		t.Fatal(err)
	}
	alice, bob, carol := accts[0], accts[1], accts[2]
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	s := e.scheduler(func(o *backfill.Options) {
		o.MinBackoff, o.MaxBackoff = time.Hour, time.Hour
	})

	// The outage: every getRepo to both hosts fails.
	down.FailNext("com.atproto.sync.getRepo", 2, 503)
	other.FailNext("com.atproto.sync.getRepo", 1, 502)
	for _, a := range []*testnet.Account{alice, bob, dave} {
		if err := s.Backfill(e.ctx, a.DID().String()); err == nil {
			t.Fatalf("%s backfilled during the outage", a.DID())
		}
		if r := e.repo(a.DID()); r.State != store.StateError || r.NextAttempt.Before(time.Now().Add(30*time.Minute)) {
			t.Fatalf("%s after the failure: %+v", a.DID(), r)
		}
	}
	daveNext := e.repo(dave.DID()).NextAttempt

	// The first host answers again, for carol.
	stop := run(t, s)
	defer stop()
	e.track("network", carol.DID())
	s.Kick()
	for _, a := range []*testnet.Account{carol, alice, bob} {
		waitUntil(t, "repos of the host that answers again to sync", func() bool {
			r := e.repo(a.DID())
			return r != nil && r.State == store.StateSynced
		})
		if got, want := e.stored(a.DID()), want(a, collPost); diffMaps(got, want) != "" {
			t.Fatalf("%s: %s", a.DID(), diffMaps(got, want))
		}
	}
	if r := e.repo(dave.DID()); r.State != store.StateError || !r.NextAttempt.Equal(daveNext) {
		t.Fatalf("dave, on the host still not asked: %+v (next attempt was %v)", r, daveNext)
	}
}
