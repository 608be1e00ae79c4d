package verify

import (
	"context"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/cistern-dev/cistern/testnet"
)

// BenchmarkCheckCommit measures the verification of one live #commit of a
// single-record create, as the firehose path does it: CAR read, structure,
// and with full verification the K-256 signature and the sync 1.1 inversion
// against prevData.
func BenchmarkCheckCommit(b *testing.B) {
	net := testnet.New(b)
	acct := net.Account(b, "bench.test", testnet.Records("app.bsky.feed.post", 1000))
	const n = 256
	frames := make([]*testnet.Commit, n)
	for i := range frames {
		c, err := acct.Apply(testnet.Create("app.bsky.feed.post", "", testnet.Post("app.bsky.feed.post", "bench")))
		if err != nil {
			b.Fatal(err)
		}
		frames[i] = c
	}
	pub := acct.PublicKey()
	key := func(context.Context, bool) (atcrypto.PublicKey, error) { return pub, nil }
	for _, full := range []bool{true, false} {
		name := "full"
		if !full {
			name = "structure"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			now := time.Now()
			i := 0
			for b.Loop() {
				c := frames[i%n]
				i++
				if _, err := CheckCommit(ctx, c.Frame, c.PrevData.String(), key, full, now); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}
