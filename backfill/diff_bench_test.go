package backfill

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/repo"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/testnet"
)

// BenchmarkDiff measures the diff alone: the MST walk of a parsed repo of
// 5,000 records merged with the same records already stored, read page by
// page. Nothing differs, so nothing is written.
func BenchmarkDiff(b *testing.B) {
	const n = 5000
	net := testnet.New(b)
	a := net.Account(b, "bench.test", testnet.Records("app.bsky.feed.post", n))
	st, err := boltstore.Open(filepath.Join(b.TempDir(), "db"), &boltstore.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := writer.New(st, writer.Options{})
	go w.Run(ctx)
	res := resolver.NewStatic()
	res.Put(&resolver.Identity{DID: a.DID(), Handle: a.Handle(), PDS: a.Host().URL(), SigningKey: a.PublicKey()})
	f, err := filter.Compile(filter.Spec{FullNetwork: true})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Options{Store: st, Writer: w, Resolver: res, Filter: func() *filter.Filter { return f },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Backfill(ctx, a.DID().String()); err != nil {
		b.Fatal(err)
	}
	car, err := a.CAR()
	if err != nil {
		b.Fatal(err)
	}
	commit, rp, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(car))
	if err != nil {
		b.Fatal(err)
	}
	before := s.Stats().RecordsWritten
	var elapsed time.Duration
	for b.Loop() {
		start := time.Now()
		if err := s.diff(ctx, a.DID().String(), f, commit.Rev, rp.MST.Walk, carValues{rp}, func(store.Tx) error { return nil }); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	if s.Stats().RecordsWritten != before {
		b.Fatal("diff of an identical repo wrote records")
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "records/s")
}
