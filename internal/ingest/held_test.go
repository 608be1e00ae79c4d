package ingest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

// The total cap counts the store when its bound reaches the cap, and
// refuses only once the held commits of every repo together reach it;
// once refused, the store is counted again within a hundredth of the cap.
func TestHeldCap_Total(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	h := newHeldCap(100, 5)
	for i := range 6 {
		did := fmt.Sprintf("did:web:r%d.example", i)
		why, err := h.admit(st, ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		if i < 5 {
			if why != "" {
				t.Fatalf("commit %d refused: %s", i, why)
			}
			err := st.Update(ctx, func(tx store.Tx) error {
				return tx.PutBuffer(&store.BufferedCommit{DID: did, Rev: "3l" + fmt.Sprint(i), Seq: int64(i + 1), Data: []byte("x")})
			})
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !strings.Contains(why, "5 live commits held over every repo") {
			t.Fatalf("commit %d past the total: %q", i, why)
		}
	}
	// Once held commits go away (a backfill took them), room comes back.
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.DeleteBuffer("did:web:r0.example", "") }); err != nil {
		t.Fatal(err)
	}
	for range 200 { // the store is counted again within a hundredth of the cap
		if why, err := h.admit(st, ctx, "did:web:new.example"); err != nil || why == "" {
			return
		}
	}
	t.Fatal("no room after a repo's held commits were removed")
}
