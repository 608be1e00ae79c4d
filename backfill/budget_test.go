package backfill_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

// lengthProxy forwards requests to a PDS and answers with a Content-Length,
// which testnet's streamed getRepo does not send for large CARs.
type lengthProxy struct {
	*httptest.Server
	requests atomic.Int64
}

func newLengthProxy(t *testing.T, target string) *lengthProxy {
	p := &lengthProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		resp, err := http.Get(target + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(p.Close)
	return p
}

// TestBackfill_ByteBudgetAdmitsOneBigRepoAtATime backfills two repos whose
// CARs do not fit in the budget together: the second waits until the first
// released its budget, for CARs of known length (admitted before the body
// is read) and unknown length (spooled, then admitted).
func TestBackfill_ByteBudgetAdmitsOneBigRepoAtATime(t *testing.T) {
	for _, known := range []bool{false, true} {
		t.Run(fmt.Sprintf("content-length=%v", known), func(t *testing.T) {
			net := testnet.New(t)
			a := net.Account(t, "a.test", testnet.Records(collPost, 1500))
			b := net.Account(t, "b.test", testnet.Records(collPost, 1500))
			sizes := map[string]int64{}
			for _, acc := range []*testnet.Account{a, b} {
				c, err := acc.CAR()
				if err != nil {
					t.Fatal(err)
				}
				sizes[acc.DID().String()] = int64(len(c))
			}
			cost := func(did string) int64 { return int64(float64(sizes[did]) * backfill.MemoryPerCARByte) }
			budget := cost(a.DID().String()) * 3 / 2 // room for one, not two
			e := newEnv(t, net, filter.Spec{FullNetwork: true})
			var proxy *lengthProxy
			if known {
				proxy = newLengthProxy(t, net.PDSURL())
				for _, acc := range []*testnet.Account{a, b} {
					e.res.Put(&resolver.Identity{DID: acc.DID(), Handle: acc.Handle(), PDS: proxy.URL, SigningKey: acc.PublicKey()})
				}
			}
			e.track("network", a.DID(), b.DID())

			var s *backfill.Scheduler
			var mu sync.Mutex
			var order []string
			s = e.scheduler(func(o *backfill.Options) {
				o.ByteBudget = budget
				o.OnBackfilled = func(ctx context.Context, did, rev string, data cid.Cid) error {
					mu.Lock()
					first := len(order) == 0
					order = append(order, did)
					mu.Unlock()
					if first {
						// Hold the budget until the other repo is waiting for it.
						other := a.DID().String()
						if did == other {
							other = b.DID().String()
						}
						if known {
							waitUntil(t, "second request", func() bool { return proxy.requests.Load() == 2 })
						} else {
							waitUntil(t, "second CAR spooled", func() bool {
								return s.Stats().BytesFetched == sizes[did]+sizes[other]
							})
						}
						time.Sleep(50 * time.Millisecond)
						st := s.Stats()
						if st.BudgetInUse != cost(did) {
							t.Errorf("budget in use %d while the first repo holds %d", st.BudgetInUse, cost(did))
						}
						mu.Lock()
						if len(order) != 1 {
							t.Errorf("second repo finished while the first held the budget")
						}
						mu.Unlock()
					}
					return markSynced(ctx, e, did)
				}
			})
			run(t, s)
			waitUntil(t, "both synced", func() bool { return s.Stats().Completed == 2 })
			st := s.Stats()
			if st.BudgetPeak > budget || st.BudgetPeak < cost(a.DID().String()) || st.BudgetInUse != 0 {
				t.Fatalf("budget peak %d in use %d, budget %d, CARs %v", st.BudgetPeak, st.BudgetInUse, budget, sizes)
			}
			for _, acc := range []*testnet.Account{a, b} {
				if d := diffMaps(e.stored(acc.DID()), want(acc, collPost)); d != "" {
					t.Fatal(d)
				}
			}
		})
	}
}

// markSynced does what the indexer's OnBackfilled does last.
func markSynced(ctx context.Context, e *env, did string) error {
	return e.w.Write(ctx, func(tx store.Tx) error {
		r, err := tx.Repo(did)
		if err != nil {
			return err
		}
		c := *r
		c.State = store.StateSynced
		if err := tx.PutRepo(&c); err != nil {
			return err
		}
		return tx.Dequeue(did)
	})
}

// TestBackfill_PeakHeapWithBudget backfills large repos under a byte budget
// that admits one at a time, and checks that the heap stays within the
// budget plus a stated overhead; it logs the numbers.
func TestBackfill_PeakHeapWithBudget(t *testing.T) {
	nRepos, nRecords := 8, 5000
	if testing.Short() {
		nRepos, nRecords = 2, 2000
	}
	net := testnet.New(t)
	var dids []syntax.DID
	var total int64
	for i := range nRepos {
		a := net.Account(t, fmt.Sprintf("big%d.test", i), testnet.Records(collPost, nRecords))
		dids = append(dids, a.DID())
		c, _ := a.CAR()
		total += int64(len(c))
	}
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	e.track("network", dids...)
	budget := int64(float64(total/int64(nRepos)*3/2) * backfill.MemoryPerCARByte) // room for one repo at a time
	s := e.scheduler(func(o *backfill.Options) { o.ByteBudget = budget; o.Concurrency = nRepos })

	// Collect often, so that the heap measured is what is held, not
	// garbage waiting for the next cycle.
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	run(t, s)
	waitUntil(t, "all synced", func() bool { return s.Stats().Completed == int64(nRepos) })
	close(stop)
	<-sampled
	st := s.Stats()
	t.Logf("%d repos × %d records, CARs %d KiB in all, budget %d KiB: heap before %d KiB, peak %d KiB (+%d KiB); budget peak %d KiB",
		nRepos, nRecords, total>>10, budget>>10, base.HeapAlloc>>10, peak.Load()>>10,
		(int64(peak.Load())-int64(base.HeapAlloc))>>10, st.BudgetPeak>>10)
	if st.BudgetPeak > budget {
		t.Fatalf("budget peak %d over budget %d", st.BudgetPeak, budget)
	}
	// The stated overhead beyond the budget: write batches, the HTTP and
	// CAR buffers of the simulated PDS serving the repos in this same
	// process, and the collector's slack.
	const overhead = 16 << 20
	if grew := int64(peak.Load()) - int64(base.HeapAlloc); grew > budget+overhead {
		t.Fatalf("heap grew by %d KiB while backfilling, over the budget of %d KiB plus %d KiB", grew>>10, budget>>10, overhead>>10)
	}
}
