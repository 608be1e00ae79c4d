package cistern_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// Stats says, for the status page, where each firehose source stands,
// which live commits were rejected and why, and which backfills failed.
func TestStats_FirehoseRejectionsAndFailures(t *testing.T) {
	net := testnet.New(t, testnet.WithHosts(2))
	alice := net.Account(t, "alice.test", testnet.Records(post, 3))
	down, err := net.Host(1).CreateAccount("down.test", testnet.Records(post, 3))
	if err != nil {
		t.Fatal(err)
	}
	net.Host(1).FailNext("com.atproto.sync.getRepo", 1000, 503)
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{DIDs: []string{alice.DID().String(), down.DID().String()}}))
	waitSynced(t, ix, alice.DID().String())
	if _, err := alice.ApplyFaulty(testnet.FaultBadSignature, testnet.Create(post, "", testnet.Post(post, "unsigned"))); err != nil {
		t.Fatal(err)
	}
	var st *cistern.Stats
	eventually(t, 10*time.Second, func() string {
		st, err = ix.Stats(context.Background())
		switch {
		case err != nil:
			return err.Error()
		case len(st.RecentRejects) == 0:
			return "no rejection yet"
		case len(st.BackfillFailures) == 0:
			return "no backfill failure yet"
		case len(st.Firehose) != 1 || st.Firehose[0].Cursor == 0 || st.Firehose[0].CursorStamped.IsZero():
			return fmt.Sprintf("firehose %+v, want one source with a saved cursor and its time", st.Firehose)
		}
		return ""
	})
	r := st.RecentRejects[0]
	if r.DID != alice.DID().String() || r.Reason != cistern.RejectBadSignature || r.Message == "" || r.At.IsZero() {
		t.Fatalf("rejection %+v, want alice's bad signature", r)
	}
	f := st.BackfillFailures[0]
	if f.DID != down.DID().String() || f.Kind != "http" || f.Host == "" {
		t.Fatalf("failure %+v, want down.test's HTTP failure on its host", f)
	}
	fh := st.Firehose[0]
	if fh.Source != net.RelayURL() || fh.Messages == 0 || fh.LastReceived.IsZero() || fh.LastStamped.IsZero() || fh.CursorStamped.IsZero() || !fh.Connected {
		t.Fatalf("firehose %+v", fh)
	}
	hosts := ix.BackfillHosts()
	failing := 0
	for _, h := range hosts {
		failing += h.Failing
	}
	if failing != 1 {
		t.Fatalf("hosts %+v, want one failing repo", hosts)
	}
}

// A crawl is long work: Stats.Work shows the repos it listed, and that it
// ended.
func TestStats_CrawlProgress(t *testing.T) {
	net := testnet.New(t)
	for i := range 5 {
		net.Account(t, fmt.Sprintf("user%d.test", i), testnet.Records(post, 1))
	}
	cfg := crawlConfig(t, net, filter.Spec{FullNetwork: true})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	eventually(t, 10*time.Second, func() string {
		st, err := ix.Stats(context.Background())
		if err != nil {
			return err.Error()
		}
		for _, w := range st.Work {
			if w.Name == "crawl of the full network (repos listed)" && w.Done == 5 && !w.Finished.IsZero() && w.Error == "" {
				return ""
			}
		}
		return fmt.Sprintf("work %+v, want the finished crawl with 5 repos listed", st.Work)
	})
}
