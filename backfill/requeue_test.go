package backfill_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
	"github.com/ipfs/go-cid"
)

// A repo queued again during its own backfill (the indexer's drain found a
// bad held commit and asked for a resync) is backfilled again without a
// Kick. (The scheduler unclaims a repo before it rescans the queue; the
// race this once lost, seen under load in CI, is not forced here.)
func TestScheduler_RequeuedDuringItsBackfillRunsAgain(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "again.test", testnet.Records(collPost, 5))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", a.DID())
	var calls atomic.Int32
	s := e.scheduler(func(o *backfill.Options) {
		o.OnBackfilled = func(ctx context.Context, did, rev string, data cid.Cid) error {
			if calls.Add(1) == 1 {
				return e.w.Write(ctx, func(tx store.Tx) error {
					r, err := tx.Repo(did)
					if err != nil {
						return err
					}
					c := *r
					c.State = store.StateDesynchronized
					if err := tx.PutRepo(&c); err != nil {
						return err
					}
					return tx.Enqueue(did, time.Now())
				})
			}
			return markSynced(ctx, e, did)
		}
	})
	run(t, s)
	waitUntil(t, "a second backfill", func() bool { return calls.Load() >= 2 })
}
