package httpapi_test

import (
	"context"
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
	// A long backoff: every retry starts by dropping the held commits (the
	// CAR it fetches holds them), which would keep the count at zero.
	ix, err := cistern.Open(cistern.Config{
		Path: t.TempDir() + "/c.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(), SkipHandleVerification: true,
		Logger: quiet, Filter: filter.Spec{DIDs: []string{did}},
		Backfill: cistern.BackfillConfig{MinBackoff: time.Hour, MaxBackoff: time.Hour},
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
