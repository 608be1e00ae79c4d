package writer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

func open(t *testing.T, opts writer.Options) (*writer.Writer, store.Store) {
	t.Helper()
	st, err := boltstore.Open(t.TempDir()+"/w.db", &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	w := writer.New(st, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return w, st
}

func TestWriter_FailedWriteLeavesOthersCommitted(t *testing.T) {
	// MaxDelay makes the writes share transactions, so that failing ones
	// roll back batches that others are in.
	w, st := open(t, writer.Options{MaxDelay: 20 * time.Millisecond})
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = w.Write(context.Background(), func(tx store.Tx) error {
				if err := tx.PutMeta(fmt.Sprintf("k%03d", i), []byte("v")); err != nil {
					return err
				}
				if i%7 == 0 {
					return boom
				}
				return nil
			})
		}(i)
	}
	wg.Wait()
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		for i, werr := range errs {
			_, merr := tx.Meta(fmt.Sprintf("k%03d", i))
			switch {
			case i%7 == 0 && !errors.Is(werr, boom):
				t.Errorf("write %d: got %v, want boom", i, werr)
			case i%7 == 0 && !errors.Is(merr, store.ErrNotFound):
				t.Errorf("write %d failed but its change is visible", i)
			case i%7 != 0 && (werr != nil || merr != nil):
				t.Errorf("write %d: %v / %v", i, werr, merr)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	if s.Writes != 171 || s.Failed != 29 {
		t.Fatalf("stats %+v, want 171 writes and 29 failures", s)
	}
	if s.Commits*2 > s.Writes {
		t.Fatalf("%d commits for %d writes: the writes were not grouped", s.Commits, s.Writes)
	}
}

func TestWriter_OnCommitSeesEventsInOrder(t *testing.T) {
	var mu sync.Mutex
	var seen []uint64
	w, _ := open(t, writer.Options{OnCommit: func(newest uint64) {
		mu.Lock()
		seen = append(seen, newest)
		mu.Unlock()
	}})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := w.Write(context.Background(), func(tx store.Tx) error {
				return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", Handle: "a.test"})
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("OnCommit newest went from %d to %d", seen[i-1], seen[i])
		}
	}
	if seen[len(seen)-1] != 50 {
		t.Fatalf("last newest %d, want 50", seen[len(seen)-1])
	}
}

func TestWriter_ClosedWriterRefuses(t *testing.T) {
	st, err := boltstore.Open(t.TempDir()+"/w.db", &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := writer.New(st, writer.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	cancel()
	<-done
	err = w.Write(context.Background(), func(tx store.Tx) error { return nil })
	if !errors.Is(err, writer.ErrClosed) {
		t.Fatalf("Write after stop: %v, want ErrClosed", err)
	}
	if err := w.Submit(context.Background(), func(store.Tx) error { return nil }, func(error) {}); !errors.Is(err, writer.ErrClosed) {
		t.Fatalf("Submit after stop: %v, want ErrClosed", err)
	}
}

func BenchmarkWriter_SmallWrites(b *testing.B) {
	st, err := boltstore.Open(b.TempDir()+"/w.db", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	w := writer.New(st, writer.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			key := fmt.Sprintf("k%p%d", pb, i)
			if err := w.Write(ctx, func(tx store.Tx) error { return tx.PutMeta(key, []byte("v")) }); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// Submitted writes report through their callback and commit in the order
// they were queued together with plain writes: when a write succeeds, every
// write queued before it has been reported. (A failed write is reported as
// soon as it fails, possibly before earlier writes of its batch commit.)
func TestWriter_SubmitKeepsQueueOrder(t *testing.T) {
	w, st := open(t, writer.Options{MaxDelay: 5 * time.Millisecond})
	boom := errors.New("boom")
	var mu sync.Mutex
	var reported []int // order in which outcomes reached the callbacks
	results := map[int]error{}
	for i := range 300 {
		fn := func(tx store.Tx) error {
			// Each write sees the one queued before it.
			if i > 0 && i%10 != 1 {
				if _, err := tx.Meta(fmt.Sprintf("k%03d", i-1)); err != nil {
					return fmt.Errorf("write %d ran before write %d: %w", i, i-1, err)
				}
			}
			if i%10 == 0 {
				return boom
			}
			return tx.PutMeta(fmt.Sprintf("k%03d", i), []byte("v"))
		}
		if i%3 == 0 {
			// A plain Write in between: it must see every earlier
			// submitted write committed or failed.
			err := w.Write(context.Background(), fn)
			if (err != nil) != (i%10 == 0) {
				t.Fatalf("write %d: %v", i, err)
			}
			mu.Lock()
			for j := range i {
				if _, ok := results[j]; !ok && err == nil {
					t.Errorf("write %d returned before submitted write %d was reported", i, j)
				}
			}
			results[i] = nil
			reported = append(reported, i)
			mu.Unlock()
			continue
		}
		err := w.Submit(context.Background(), fn, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			results[i] = err
			reported = append(reported, i)
		})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	if err := w.Write(context.Background(), func(store.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	last := -1
	for _, got := range reported {
		if got%10 == 0 {
			continue
		}
		if got < last {
			t.Fatalf("write %d reported after write %d: out of queue order", got, last)
		}
		last = got
	}
	if len(reported) != 300 {
		t.Fatalf("%d outcomes reported, want 300", len(reported))
	}
	for i := range 300 {
		if err := results[i]; i%3 != 0 && (err != nil) != (i%10 == 0) || i%10 == 0 && i%3 != 0 && !errors.Is(err, boom) {
			t.Errorf("submitted write %d: %v", i, err)
		}
	}
	if err := st.View(context.Background(), func(tx store.ReadTx) error {
		for i := range 300 {
			_, err := tx.Meta(fmt.Sprintf("k%03d", i))
			if (err == nil) != (i%10 != 0) {
				t.Errorf("k%03d: %v", i, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWriter_LinksIndexedWithTheRecord(t *testing.T) {
	target := "did:plc:target"
	links := func(r *store.Record) []store.Link {
		if string(r.Value) == "links" {
			return []store.Link{{Target: target, Path: "subject"}}
		}
		return nil
	}
	w, st := open(t, writer.Options{Links: links})
	put := func(value string) {
		t.Helper()
		err := w.Write(t.Context(), func(tx store.Tx) error {
			return tx.PutRecord(&store.Record{DID: "did:plc:a", Collection: "app.bsky.graph.follow", RKey: "1",
				CID: []byte(value), Rev: "3k2", Value: []byte(value)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	count := func() int64 {
		t.Helper()
		var n store.BacklinkCount
		err := st.View(t.Context(), func(tx store.ReadTx) error {
			var err error
			n, err = tx.CountBacklinks(target, "app.bsky.graph.follow", "subject")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return n.Records
	}
	put("links")
	if n := count(); n != 1 {
		t.Fatalf("after a put with a link: %d backlinks, want 1", n)
	}
	put("none") // an update without the link removes it
	if n := count(); n != 0 {
		t.Fatalf("after an update without it: %d backlinks, want 0", n)
	}
}
