package backlinks_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

// benchValue returns the i-th record of a repo of a typical Bluesky mix:
// half likes, a tenth reposts, a fifth follows, the rest posts, half of
// them replies with a mention. Every record links somewhere.
func benchValue(b *testing.B, i int) (string, []byte) {
	subject := fmt.Sprintf("at://did:plc:author%05d/app.bsky.feed.post/3kpost%06d", i%997, i%9973)
	ref := map[string]any{"uri": subject, "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
	now := "2026-01-01T00:00:00.000Z"
	var coll string
	m := map[string]any{"createdAt": now}
	switch r := i % 10; {
	case r < 5:
		coll, m["subject"] = "app.bsky.feed.like", ref
	case r == 5:
		coll, m["subject"] = "app.bsky.feed.repost", ref
	case r < 8:
		coll, m["subject"] = "app.bsky.graph.follow", fmt.Sprintf("did:plc:author%05d", i%997)
	default:
		coll = "app.bsky.feed.post"
		m["text"] = "a post of a typical length, about as long as this sentence is"
		m["langs"] = []any{"en"}
		if r == 9 {
			m["reply"] = map[string]any{"root": ref, "parent": ref}
			m["facets"] = []any{map[string]any{"index": map[string]any{"byteStart": int64(0), "byteEnd": int64(4)},
				"features": []any{map[string]any{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:mentioned"}}}}
		}
	}
	m["$type"] = coll
	v, err := atdata.MarshalCBOR(m)
	if err != nil {
		b.Fatal(err)
	}
	return coll, v
}

// backfill writes repos × perRepo records with their events through the
// writer, one transaction per repo, as a backfill does, with the index on
// or off, and returns the time taken and the store's file size.
func backfill(b *testing.B, path string, index bool, repos, perRepo int) (time.Duration, int64) {
	db, err := boltstore.Open(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var opts writer.Options
	if index {
		opts.Links = backlinks.New(backlinks.Options{Store: db, Enabled: true}).Links
	}
	w := writer.New(db, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	type rec struct {
		coll string
		v    []byte
	}
	values := make([]rec, perRepo)
	for i := range values {
		values[i].coll, values[i].v = benchValue(b, i)
	}
	start := time.Now()
	for r := range repos {
		did := fmt.Sprintf("did:plc:repo%06d", r)
		err := w.Write(ctx, func(tx store.Tx) error {
			for i, v := range values {
				ev := &store.Event{Kind: store.KindRecord, DID: did, Rev: "3kaaaaaaaaaa2", Time: time.Now(),
					Collection: v.coll, RKey: fmt.Sprintf("3k%010d", i), Action: store.ActionCreate,
					CID: []byte(fmt.Sprintf("cid%d", i)), Record: v.v}
				if err := store.WriteRecordChange(tx, ev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	took := time.Since(start)
	return took, db.Size()
}

// BenchmarkBackfill measures the cost of the index on the backfill write
// path: records/s and store bytes/record, with and without it.
//
//	go test -run '^$' -bench Backfill -benchtime 1x ./backlinks/
func BenchmarkBackfill(b *testing.B) {
	const repos, perRepo = 50, 1000
	for _, index := range []bool{false, true} {
		b.Run(fmt.Sprintf("index=%v", index), func(b *testing.B) {
			var took time.Duration
			var size int64
			cpu0 := cpuTime()
			for i := 0; b.Loop(); i++ {
				t, s := backfill(b, filepath.Join(b.TempDir(), fmt.Sprintf("b%d.db", i)), index, repos, perRepo)
				took += t
				size = s
			}
			n := float64(repos * perRepo)
			b.ReportMetric(n*float64(b.N)/took.Seconds(), "records/s")
			b.ReportMetric(float64(size)/n, "bytes/record")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/(n*float64(b.N)), "cpu-µs/record")
		})
	}
}

// hotStore holds 100,000 likes of one post, by 1,000 repos.
var hotStore struct {
	once sync.Once
	db   *boltstore.DB
	dir  string
}

const hotPost = "at://did:plc:hot/app.bsky.feed.post/3khot"

func openHot(b *testing.B) *backlinks.Index {
	hotStore.once.Do(func() {
		dir, err := mkdirTemp()
		if err != nil {
			b.Fatal(err)
		}
		hotStore.dir = dir
		db, err := boltstore.Open(filepath.Join(dir, "hot.db"), &boltstore.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		v := likeValue(b, hotPost)
		for r := range 1000 {
			did := fmt.Sprintf("did:plc:liker%05d", r)
			err := db.Update(context.Background(), func(tx store.Tx) error {
				for i := range 100 {
					rec := &store.Record{DID: did, Collection: "app.bsky.feed.like", RKey: fmt.Sprintf("3k%08d", i),
						CID: []byte("c"), Rev: "3k2", Value: v}
					if err := tx.PutRecord(rec); err != nil {
						return err
					}
					if err := tx.PutLinks(did, rec.Collection, rec.RKey, rec.Seq, []store.Link{{Target: hotPost, Path: "subject.uri"}}); err != nil {
						return err
					}
				}
				return tx.PutMeta(backlinks.MetaKey, []byte(`{"state":"ready"}`))
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		hotStore.db = db
	})
	return backlinks.New(backlinks.Options{Store: hotStore.db, Enabled: true})
}

// BenchmarkQuery_100000Links measures the queries of a target with 100,000
// links: the first page, a page deep in the list, and the counts.
//
//	go test -run '^$' -bench Query -benchtime 2000x ./backlinks/
func BenchmarkQuery_100000Links(b *testing.B) {
	x := openHot(b)
	ctx := context.Background()
	src := "app.bsky.feed.like:subject.uri"
	n, err := x.Count(ctx, hotPost, src)
	if err != nil || n.Records != 100000 || n.DIDs != 1000 {
		b.Fatalf("count %+v, %v", n, err)
	}
	// A cursor half way down.
	var mid string
	cursor := ""
	for range 500 {
		p, err := x.Backlinks(ctx, hotPost, src, cursor, 100)
		if err != nil {
			b.Fatal(err)
		}
		cursor = p.Cursor
	}
	mid = cursor
	b.Run("first page of 100", func(b *testing.B) {
		for b.Loop() {
			if p, err := x.Backlinks(ctx, hotPost, src, "", 100); err != nil || len(p.Links) != 100 {
				b.Fatal(err)
			}
		}
	})
	b.Run("page of 100 at 50,000", func(b *testing.B) {
		for b.Loop() {
			if p, err := x.Backlinks(ctx, hotPost, src, mid, 100); err != nil || len(p.Links) != 100 {
				b.Fatal(err)
			}
		}
	})
	b.Run("count", func(b *testing.B) {
		for b.Loop() {
			if _, err := x.Count(ctx, hotPost, src); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mkdirTemp() (string, error) { return os.MkdirTemp("", "backlinks-bench") }

func TestMain(m *testing.M) {
	code := m.Run()
	if hotStore.db != nil {
		hotStore.db.Close()
		os.RemoveAll(hotStore.dir)
	}
	os.Exit(code)
}
