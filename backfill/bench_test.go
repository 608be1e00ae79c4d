package backfill_test

import (
	"testing"
	"time"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// BenchmarkBackfill measures records per second end to end: getRepo over
// loopback, CAR parse, signature verification, MST walk, diff against an
// empty store, and writes through the group-commit writer into bbolt
// (NoSync). Each iteration backfills a repo of 2,000 records into a fresh
// store.
func BenchmarkBackfill(b *testing.B) {
	const n = 2000
	net := testnet.New(b)
	a := net.Account(b, "bench.test", testnet.Records(collPost, n))
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b, net, filter.Spec{FullNetwork: true})
		e.track("network", a.DID())
		s := e.scheduler(func(o *backfill.Options) { o.Verify = true })
		b.StartTimer()
		start := time.Now()
		if err := s.Backfill(e.ctx, a.DID().String()); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "records/s")
}
