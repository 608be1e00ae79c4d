package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// Live commits held for a repo whose PDS is down are counted in /stats and
// /metrics, and the count falls to zero once the repo is synced.
func TestStats_HeldCommits(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 2))
	did := alice.DID().String()
	alice.Host().FailNext("com.atproto.sync.getRepo", 1_000_000, 503)
	ix, ctx := openHolding(t, net, did, 0)
	api := serve(t, ix, httpapi.Options{}).URL
	waitFor(t, "the firehose connection and a failed backfill", func() bool {
		r, err := ix.Repo(ctx, did)
		return net.Relay().Connections() > 0 && err == nil && r.State.String() == "error"
	})
	for i := range 5 {
		if _, err := alice.CreateRecord(posts, testnet.Post(posts, "held "+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	var st struct{ HeldCommits, HeldBytes int64 }
	waitFor(t, "5 held commits in /stats", func() bool {
		get(t, api+"/stats").decode(t, &st)
		return st.HeldCommits == 5
	})
	if st.HeldBytes < 5*100 {
		t.Fatalf("5 held commits take %d bytes", st.HeldBytes)
	}
	m := string(get(t, api+"/metrics").Body)
	if !strings.Contains(m, "cistern_held_commits 5\n") || !strings.Contains(m, "cistern_held_bytes ") {
		t.Fatalf("metrics do not count the held commits:\n%s", m)
	}

	alice.Host().ClearFaults()
	if err := ix.Resync(ctx, did); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, ix, did)
	waitFor(t, "no held commit", func() bool {
		a := get(t, api+"/stats")
		if a.Status != http.StatusOK {
			return false
		}
		a.decode(t, &st)
		return st.HeldCommits == 0 && st.HeldBytes == 0
	})
	if n, _ := ix.CountRecords(t.Context(), did, posts); n != 7 {
		t.Fatalf("%d records after the held commits were applied", n)
	}
}

// openHolding opens an Indexer tracking did with an hour of backoff: every
// retry starts by dropping the held commits (the CAR it fetches holds
// them), which would keep the count at zero. perRepo caps the held
// commits of a repo.
func openHolding(t *testing.T, net *testnet.Network, did string, perRepo int) (*cistern.Indexer, context.Context) {
	t.Helper()
	ix, err := cistern.Open(cistern.Config{
		Path: t.TempDir() + "/c.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(), SkipHandleVerification: true,
		Logger: quiet, Filter: filter.Spec{DIDs: []string{did}},
		Backfill:              cistern.BackfillConfig{MinBackoff: time.Hour, MaxBackoff: time.Hour},
		MaxHeldCommitsPerRepo: perRepo,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		ix.Close()
	})
	waitFor(t, "the firehose connection and a failed backfill", func() bool {
		r, err := ix.Repo(ctx, did)
		return net.Relay().Connections() > 0 && err == nil && r.State.String() == "error"
	})
	return ix, ctx
}

// Past the per-repo cap, the held commits are dropped (counted in
// cistern_held_dropped_total) and the repo's next backfill brings every
// record: the store stops growing and nothing is lost.
func TestHeldCommits_CapDropsAndResyncs(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 2))
	did := alice.DID().String()
	alice.Host().FailNext("com.atproto.sync.getRepo", 1_000_000, 503)
	ix, ctx := openHolding(t, net, did, 3)
	api := serve(t, ix, httpapi.Options{}).URL
	var st struct{ HeldCommits int64 }
	for i := range 8 {
		if _, err := alice.CreateRecord(posts, testnet.Post(posts, "held "+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
		// One at a time, so that the count is read between commits.
		want := int64(i%4 + 1)
		if i%4 == 3 {
			want = 0 // the fourth passes the cap: all four dropped
		}
		waitFor(t, fmt.Sprintf("%d held commits after %d writes", want, i+1), func() bool {
			get(t, api+"/stats").decode(t, &st)
			return st.HeldCommits == want && (want != 0 || strings.Contains(string(get(t, api+"/metrics").Body), fmt.Sprintf("cistern_held_dropped_total %d\n", (i+1)/4)))
		})
	}
	r, err := ix.Repo(ctx, did)
	if err != nil || !r.Resync {
		t.Fatalf("repo after the drops: %+v %v", r, err)
	}
	alice.Host().ClearFaults()
	if err := ix.Resync(ctx, did); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, ix, did)
	if n, _ := ix.CountRecords(ctx, did, posts); n != 10 {
		t.Fatalf("%d records after the resync, want 10", n)
	}
}
