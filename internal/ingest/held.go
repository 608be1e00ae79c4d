package ingest

import (
	"context"
	"fmt"
	"sync"

	"github.com/cistern-dev/cistern/store"
)

// Defaults of the caps on held live commits.
const (
	DefaultMaxHeldPerRepo = 10_000
	DefaultMaxHeld        = 1_000_000
)

// heldCap bounds the live commits held for repos that are not synced (a
// repo whose PDS stays down would otherwise hold them without limit). It
// keeps an upper bound of each repo's count and of the total, raised by
// every commit held and made exact by counting the store when it reaches a
// cap, so that the store is counted rarely (past the total cap, at most a
// hundredth of it more is held before the next count). Held commits removed elsewhere
// (a backfill starting, a drain) only make the bounds loose. It costs one
// map entry per repo that held a commit since it was last synced.
type heldCap struct {
	perRepo, total int // <= 0: no cap

	mu        sync.Mutex
	byDID     map[string]int
	sum       int
	countNext int // sum at which the store is counted again
}

func newHeldCap(perRepo, total int) *heldCap {
	if perRepo == 0 {
		perRepo = DefaultMaxHeldPerRepo
	}
	if total == 0 {
		total = DefaultMaxHeld
	}
	return &heldCap{perRepo: perRepo, total: total, byDID: make(map[string]int), countNext: total}
}

// forget drops did's bound: it holds nothing now (synced, or dropped).
func (h *heldCap) forget(did string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.byDID, did)
}

// admit counts one more commit held for did and reports why it must not
// be held ("" when it may). st is counted when a bound reaches a cap.
func (h *heldCap) admit(st store.Store, ctx context.Context, did string) (string, error) {
	h.mu.Lock()
	n := h.byDID[did] + 1
	h.byDID[did] = n
	h.sum++
	sum := h.sum
	h.mu.Unlock()

	if h.perRepo > 0 && n > h.perRepo {
		exact := 0
		err := st.View(ctx, func(tx store.ReadTx) error {
			exact = 0
			return tx.ScanBuffer(did, func(*store.BufferedCommit) (bool, error) {
				exact++
				return true, nil
			})
		})
		if err != nil {
			return "", err
		}
		h.mu.Lock()
		h.byDID[did] = exact + 1
		h.mu.Unlock()
		if exact+1 > h.perRepo {
			return fmt.Sprintf("%d live commits held for this repo, the most allowed (MaxHeldCommitsPerRepo)", exact), nil
		}
	}
	if h.total > 0 && sum > h.countNext {
		var exact int64
		err := st.View(ctx, func(tx store.ReadTx) error {
			hc, ok := tx.(store.HeldCounter)
			if !ok {
				exact = 0 // the store cannot count: only the per-repo cap holds
				return nil
			}
			var err error
			exact, _, err = hc.HeldCommits()
			return err
		})
		if err != nil {
			return "", err
		}
		h.mu.Lock()
		h.sum = int(exact) + 1
		if int(exact)+1 > h.total {
			h.sum-- // refused: not held
		}
		// Count again once the bound could have reached the cap, and not
		// before a hundredth of it: a total that stays near the cap is not
		// counted on every commit.
		h.countNext = max(h.total, h.sum+h.total/100)
		if int(exact) >= h.total {
			h.countNext = h.sum + max(1, h.total/100)
		}
		h.mu.Unlock()
		if int(exact)+1 > h.total {
			return fmt.Sprintf("%d live commits held over every repo, the most allowed (MaxHeldCommits)", exact), nil
		}
	}
	return "", nil
}

// hold stores a live commit of a repo that is not synced, for after its
// backfill. Past a cap it drops the repo's held commits, this one with
// them, and has the repo backfilled in full again: the new backfill's CAR
// holds every commit dropped. The caller holds the repo's live lock.
func (in *Ingest) hold(ctx context.Context, bc *store.BufferedCommit) error {
	why, err := in.held.admit(in.st, ctx, bc.DID)
	if err != nil {
		return err
	}
	if why == "" {
		return in.write(ctx, func(tx store.Tx) error { return tx.PutBuffer(bc) })
	}
	if err := in.repos.DropHeld(ctx, bc.DID); err != nil {
		return err
	}
	in.held.forget(bc.DID)
	in.metrics.heldDropped.Add(1)
	in.log.Warn("held live commits dropped; the repo will be backfilled in full", "did", bc.DID, "why", why)
	return nil
}
