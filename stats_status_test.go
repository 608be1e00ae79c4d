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
