package cistern_test

import (
	"context"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// TestLive_CommitsAfterKeyRotationApply: an account rotates its signing key
// while the indexer follows the firehose; the commits it signs with the new
// key keep applying, none rejected.
func TestLive_CommitsAfterKeyRotationApply(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "rotating.test", testnet.Records(post, 3))
	did := a.DID().String()
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{DIDs: []string{did}}))
	waitSynced(t, ix, did)
	if _, err := a.CreateRecord(post, testnet.Post(post, "old key")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateKey(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := a.CreateRecord(post, testnet.Post(post, "new key")); err != nil {
			t.Fatal(err)
		}
	}
	assertConverged(t, ix, a)
	r, err := ix.Repo(context.Background(), did)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rev != a.Rev() {
		t.Fatalf("repo at rev %s (state %v), PDS at %s", r.Rev, r.State, a.Rev())
	}
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for reason, n := range st.Rejected {
		if n != 0 {
			t.Errorf("%d commits rejected as %s after a key rotation", n, reason)
		}
	}
}
