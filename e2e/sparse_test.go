package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
)

// Sparse backfill against the reference PDS: a repo of many posts and a few
// records of the stored collections is backfilled with
// com.atproto.sync.getBlocks only (the MST paths into the stored ranges and
// their records), and what is stored equals what the PDS serves; a resync
// after changes walks sparsely again and still agrees.
func TestSparse_BackfillMatchesThePDS(t *testing.T) {
	n := refnet(t)
	const (
		status = "dev.cistern.esparse.status"
		follow = "dev.cistern.esparse.graph.follow"
		block  = "dev.cistern.esparse.graph.block"
		post   = "app.bsky.feed.post" // not stored, and most of the repo
	)
	alice := n.createAccount(t, "sparse")
	for batch := range 4 {
		ops := make([]map[string]any, 0, 100)
		for i := range 100 {
			ops = append(ops, opCreate(post, "", fmt.Sprintf("post %d.%d", batch, i)))
		}
		n.applyWrites(t, alice.DID, ops...)
	}
	var statuses []writeResult
	for i := range 3 {
		statuses = append(statuses, n.create(t, alice.DID, status, fmt.Sprintf("status %d", i)))
	}
	for i := range 4 {
		n.create(t, alice.DID, follow, fmt.Sprintf("follow %d", i))
	}
	n.create(t, alice.DID, block, "block")

	spec := filter.Spec{DIDs: []string{alice.DID}, Collections: []string{status, "dev.cistern.esparse.graph.*"}}
	cfg := indexerConfig(t, n, dbPath(t), spec)
	cfg.Backfill.Strategy = backfill.StrategySparse
	ix := startIndexer(t, cfg)
	waitSynced(t, ix.Indexer, alice.DID)
	filt := mustFilter(t, spec)
	assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID)
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Backfill.Sparse != 1 || st.Backfill.SparseFallbacks != 0 {
		t.Fatalf("backfill stats %+v: want one sparse backfill, no fallback", st.Backfill)
	}
	if r, err := ix.Repo(context.Background(), alice.DID); err != nil || r.Records != 8 {
		t.Fatalf("repo %+v, %v: want 8 records stored", r, err)
	}

	// Changes, then a resync: sparse again, and still the PDS's records.
	rkey := statuses[1].URI[strings.LastIndex(statuses[1].URI, "/")+1:]
	n.put(t, alice.DID, status, rkey, "status 1, edited")
	n.create(t, alice.DID, status, "status 3")
	n.create(t, alice.DID, post, "one more post")
	if err := ix.Resync(context.Background(), alice.DID); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, ix.Indexer, alice.DID)
	assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID)
	eventually(t, convergeTimeout, "a second sparse backfill", func() error {
		st, err := ix.Stats(context.Background())
		if err != nil {
			return err
		}
		if st.Backfill.Sparse != 2 || st.Backfill.SparseFallbacks != 0 {
			return fmt.Errorf("backfill stats %+v", st.Backfill)
		}
		return nil
	})
}
