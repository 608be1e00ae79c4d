package backfill_test

import (
	"testing"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// BenchmarkBackfill_StatusesOfAPostHeavyRepo backfills the 3 statuses of a
// repo of 10,000 posts and 3 statuses (a filter storing
// xyz.statusphere.status only) with each strategy, into a fresh store each
// time, over loopback, signatures verified. It reports the bytes of the
// answers received and the requests made per backfill, and fails if the
// sparse backfill fetches 5% of the full one's bytes or more.
//
//	go test -run '^$' -bench StatusesOfAPostHeavyRepo -benchtime 20x ./backfill
func BenchmarkBackfill_StatusesOfAPostHeavyRepo(b *testing.B) {
	net := testnet.New(b)
	a := net.Account(b, "poster.test", testnet.Records(collPost, 10000), testnet.Records(collOther, 3))
	spec := filter.Spec{DIDs: []string{a.DID().String()}, Collections: []string{collOther}}
	perOp := map[backfill.Strategy][2]float64{}
	for _, strategy := range strategies {
		b.Run(string(strategy), func(b *testing.B) {
			var fetched, requests int64
			for b.Loop() {
				b.StopTimer()
				e := newEnv(b, net, spec)
				e.track("explicit", a.DID())
				s := e.scheduler(func(o *backfill.Options) { o.Strategy = strategy })
				b.StartTimer()
				if err := s.Backfill(e.ctx, a.DID().String()); err != nil {
					b.Fatal(err)
				}
				st := s.Stats()
				if st.RecordsWritten != 3 {
					b.Fatalf("%d records written, want 3", st.RecordsWritten)
				}
				fetched += st.BytesFetched
				requests += st.Requests
			}
			bytesPerOp, requestsPerOp := float64(fetched)/float64(b.N), float64(requests)/float64(b.N)
			b.ReportMetric(bytesPerOp, "bytes-fetched/op")
			b.ReportMetric(requestsPerOp, "requests/op")
			perOp[strategy] = [2]float64{bytesPerOp, requestsPerOp}
		})
	}
	full, sparse := perOp[backfill.StrategyFull][0], perOp[backfill.StrategySparse][0]
	if full > 0 && sparse > 0 {
		b.Logf("sparse fetched %.2f%% of the bytes of full", 100*sparse/full)
		if sparse >= 0.05*full {
			b.Fatalf("sparse fetched %.0f bytes, full %.0f: not under 5%%", sparse, full)
		}
	}
}
