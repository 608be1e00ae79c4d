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
