package firehose

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestWatermark(t *testing.T) {
	type step struct {
		op   string // "begin", "end"
		seq  int64
		want int64 // Value after the step
		fail bool  // Begin must fail / End must report false
	}
	tests := []struct {
		name  string
		start int64
		steps []step
	}{
		{"in order", 0, []step{
			{"begin", 1, 0, false}, {"begin", 2, 0, false}, {"end", 1, 1, false}, {"end", 2, 2, false},
		}},
		{"out of order ends", 10, []step{
			{"begin", 11, 10, false}, {"begin", 15, 10, false}, {"begin", 20, 10, false},
			{"end", 20, 10, false}, {"end", 15, 10, false}, {"end", 11, 20, false},
		}},
		{"middle ends first", 0, []step{
			{"begin", 1, 0, false}, {"begin", 2, 0, false}, {"begin", 3, 0, false},
			{"end", 2, 0, false}, {"end", 1, 2, false}, {"end", 3, 3, false},
		}},
		{"gaps in numbering", 100, []step{
			{"begin", 105, 104, false}, {"end", 105, 105, false}, {"begin", 300, 299, false}, {"end", 300, 300, false},
		}},
		{"rejects order and unknown ends", 5, []step{
			{"begin", 5, 5, true}, {"begin", 4, 5, true}, {"begin", 6, 5, false}, {"begin", 6, 5, true},
			{"end", 7, 5, true}, {"end", 6, 6, false}, {"end", 6, 6, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWatermark(tt.start)
			if w.Value() != tt.start {
				t.Fatalf("Value = %d, want start %d", w.Value(), tt.start)
			}
			for i, s := range tt.steps {
				switch s.op {
				case "begin":
					err := w.Begin(s.seq)
					if (err != nil) != s.fail || (err != nil && !errors.Is(err, ErrSeqOrder)) {
						t.Fatalf("step %d: Begin(%d) = %v", i, s.seq, err)
					}
				case "end":
					if ok := w.End(s.seq); ok == s.fail {
						t.Fatalf("step %d: End(%d) = %v", i, s.seq, ok)
					}
				}
				if got := w.Value(); got != s.want {
					t.Fatalf("step %d (%s %d): Value = %d, want %d", i, s.op, s.seq, got, s.want)
				}
			}
		})
	}
}

func TestWatermark_RandomAgainstModel(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 1))
		w := NewWatermark(0)
		inflight := map[int64]bool{}
		var last int64
		for range 2000 {
			if len(inflight) == 0 || r.IntN(2) == 0 {
				last += 1 + r.Int64N(3)
				if err := w.Begin(last); err != nil {
					t.Fatal(err)
				}
				inflight[last] = true
			} else {
				keys := slices.Sorted(mapKeys(inflight))
				k := keys[r.IntN(len(keys))]
				w.End(k)
				delete(inflight, k)
			}
			want := last
			if len(inflight) > 0 {
				want = slices.Min(slices.Collect(mapKeys(inflight))) - 1
			}
			if got := w.Value(); got != want {
				t.Fatalf("seed %d: Value = %d, want %d", seed, got, want)
			}
			if w.InFlight() != len(inflight) {
				t.Fatalf("seed %d: InFlight = %d, want %d", seed, w.InFlight(), len(inflight))
			}
		}
	}
}

func mapKeys(m map[int64]bool) func(func(int64) bool) {
	return func(yield func(int64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestDispatcher_OrderAndWatermarkProperty dispatches messages of many repos
// to handlers with random delays and checks, for several random schedules:
// per-repo order; at every observation the watermark is below every message
// not yet handled; the watermark never decreases; and once all is handled it
// equals the last sequence number.
func TestDispatcher_OrderAndWatermarkProperty(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 2))
			workers, queue := 1+r.IntN(8), 1+r.IntN(8)
			const n, repos = 1500, 40

			var (
				mu      sync.Mutex
				open    = map[int64]bool{} // dispatched, handler not returned
				perRepo = map[string][]int64{}
				bad     []string
			)
			var d *Dispatcher
			delays := make([]time.Duration, n+1)
			for i := range delays {
				if r.IntN(10) == 0 {
					delays[i] = time.Duration(r.IntN(300)) * time.Microsecond
				}
			}
			d = NewDispatcher(workers, queue, func(ctx context.Context, m *Message) error {
				if wm := d.Watermark(); wm >= m.Seq {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("watermark %d while %d runs", wm, m.Seq))
					mu.Unlock()
				}
				time.Sleep(delays[m.Seq%int64(len(delays))])
				mu.Lock()
				perRepo[m.DID] = append(perRepo[m.DID], m.Seq)
				delete(open, m.Seq)
				mu.Unlock()
				if m.Seq%97 == 0 {
					return errors.New("handler failure counts as done")
				}
				return nil
			})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			runErr := make(chan error, 1)
			go func() { runErr <- d.Run(ctx) }()

			// The observer checks the watermark against the open set.
			stop := make(chan struct{})
			var obs sync.WaitGroup
			obs.Go(func() {
				var prev int64
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					wm := d.Watermark()
					for s := range open {
						if wm > s-1 {
							bad = append(bad, fmt.Sprintf("watermark %d with %d open", wm, s))
						}
					}
					mu.Unlock()
					if wm < prev {
						bad = append(bad, fmt.Sprintf("watermark went from %d to %d", prev, wm))
					}
					prev = wm
					time.Sleep(50 * time.Microsecond)
				}
			})

			var seq, wantFailed int64
			for range n {
				seq += 1 + r.Int64N(2) // numbering may have gaps
				if seq%97 == 0 {
					wantFailed++
				}
				m := &Message{Seq: seq, Kind: KindCommit, DID: fmt.Sprintf("did:plc:repo%02d", r.IntN(repos))}
				mu.Lock()
				open[seq] = true
				mu.Unlock()
				if err := d.Dispatch(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			if err := d.Wait(wctx); err != nil {
				t.Fatalf("Wait: %v", err)
			}
			close(stop)
			obs.Wait()

			if got := d.Watermark(); got != seq {
				t.Errorf("final watermark %d, want %d", got, seq)
			}
			if st := d.Stats(); st.InFlight != 0 || st.Handled != n || st.Failed != wantFailed {
				t.Errorf("stats = %+v, want nothing in flight, %d handled, %d failed", st, n, wantFailed)
			}
			total := 0
			for did, seqs := range perRepo {
				total += len(seqs)
				if !slices.IsSorted(seqs) {
					t.Errorf("%s handled out of order: %v", did, seqs)
				}
			}
			if total != n {
				t.Errorf("%d handled, want %d", total, n)
			}
			if len(bad) > 0 {
				t.Errorf("%d violations, first: %s", len(bad), bad[0])
			}
			cancel()
			if err := <-runErr; !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		})
	}
}

func TestDispatcher_ReposRunInParallel(t *testing.T) {
	bStarted := make(chan struct{})
	var d *Dispatcher
	d = NewDispatcher(4, 4, func(ctx context.Context, m *Message) error {
		if m.Seq == 1 { // repo a waits for repo b, which comes after it
			select {
			case <-bStarted:
			case <-ctx.Done():
			}
			return nil
		}
		close(bStarted)
		return nil
	})
	a, b := "did:plc:a", "did:plc:b"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go d.Run(ctx)
	d.Dispatch(ctx, &Message{Seq: 1, DID: a})
	d.Dispatch(ctx, &Message{Seq: 2, DID: b})
	if err := d.Wait(ctx); err != nil {
		t.Fatalf("Wait = %v: messages of two repos did not run in parallel", err)
	}
	if d.Watermark() != 2 {
		t.Errorf("Watermark = %d, want 2", d.Watermark())
	}
}

func TestDispatcher_BackPressureAndStop(t *testing.T) {
	release := make(chan struct{})
	started := make(chan int64, 10)
	d := NewDispatcher(1, 1, func(ctx context.Context, m *Message) error {
		started <- m.Seq
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()

	mustDispatch := func(seq int64) {
		t.Helper()
		if err := d.Dispatch(ctx, &Message{Seq: seq, DID: "did:plc:x"}); err != nil {
			t.Fatalf("Dispatch(%d) = %v", seq, err)
		}
	}
	mustDispatch(1) // taken by the worker
	<-started
	mustDispatch(2) // fills the queue
	short, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer scancel()
	if err := d.Dispatch(short, &Message{Seq: 3, DID: "did:plc:x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dispatch on a full queue = %v, want to block until the deadline", err)
	}
	if d.Watermark() != 0 {
		t.Errorf("Watermark = %d with seq 1 running", d.Watermark())
	}

	release <- struct{}{} // 1 done, 2 starts
	<-started
	if got := d.Watermark(); got != 1 {
		t.Errorf("Watermark = %d, want 1", got)
	}

	// Stop with 2 running: Run returns, 2's handler sees ctx end; the failed
	// Dispatch of 3 keeps the watermark below 3 for good.
	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if got := d.Watermark(); got != 2 {
		t.Errorf("Watermark after stop = %d, want 2", got)
	}
	if err := d.Dispatch(t.Context(), &Message{Seq: 4, DID: "did:plc:x"}); !errors.Is(err, ErrDispatcherStopped) {
		t.Errorf("Dispatch after stop = %v, want ErrDispatcherStopped", err)
	}
	if err := d.Run(t.Context()); !errors.Is(err, ErrDispatcherStopped) {
		t.Errorf("second Run = %v", err)
	}
}

func TestDispatcher_QueuedWorkIsNotHandledAfterStop(t *testing.T) {
	block := make(chan struct{})
	var mu sync.Mutex
	var seen []int64
	d := NewDispatcher(1, 8, func(ctx context.Context, m *Message) error {
		mu.Lock()
		seen = append(seen, m.Seq)
		mu.Unlock()
		if m.Seq == 1 {
			<-block
		}
		return nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	for s := int64(1); s <= 5; s++ { // queued before Run
		if err := d.Dispatch(ctx, &Message{Seq: s, DID: "did:plc:x"}); err != nil {
			t.Fatal(err)
		}
	}
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	close(block)
	<-runErr
	if !slices.Equal(seen, []int64{1}) {
		t.Errorf("handled %v after stop, want only [1]", seen)
	}
	if got := d.Watermark(); got != 1 {
		t.Errorf("Watermark = %d, want 1", got)
	}
	if err := d.Wait(t.Context()); !errors.Is(err, ErrDispatcherStopped) {
		t.Errorf("Wait = %v, want ErrDispatcherStopped", err)
	}
}

func TestDispatcher_MessagesWithoutDIDAndDuplicates(t *testing.T) {
	var handledInline bool
	d := NewDispatcher(2, 2, func(ctx context.Context, m *Message) error {
		if m.Kind == KindInfo {
			handledInline = true // no Run: only an inline call can get here
		}
		return nil
	})
	if err := d.Dispatch(t.Context(), &Message{Kind: KindInfo}); err != nil {
		t.Fatal(err)
	}
	if !handledInline {
		t.Error("info message not handled before Dispatch returned")
	}
	if err := d.Dispatch(t.Context(), &Message{Seq: 7, DID: "did:plc:x"}); err != nil {
		t.Fatal(err)
	}
	// Duplicates are dropped: nothing more is queued or in flight.
	for _, seq := range []int64{7, 3} {
		if err := d.Dispatch(t.Context(), &Message{Seq: seq, DID: "did:plc:y"}); err != nil {
			t.Errorf("Dispatch of duplicate %d = %v", seq, err)
		}
	}
	if st := d.Stats(); st.Duplicates != 2 || st.InFlight != 1 {
		t.Errorf("stats = %+v, want 2 duplicates and 1 in flight", st)
	}
}

func BenchmarkDispatcher(b *testing.B) {
	d := NewDispatcher(DefaultWorkers, DefaultQueue, func(context.Context, *Message) error { return nil })
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	go d.Run(ctx)
	msgs := make([]Message, 1024)
	for i := range msgs {
		msgs[i] = Message{Kind: KindCommit, DID: fmt.Sprintf("did:plc:repo%04d", i)}
	}
	b.ReportAllocs()
	var seq int64
	for b.Loop() {
		seq++
		m := msgs[seq%int64(len(msgs))]
		m.Seq = seq
		if err := d.Dispatch(ctx, &m); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// TestDispatcher_NoHeadOfLineBlocking blocks the handler of repo A and
// checks that the messages of many other repos, dispatched behind A's, are
// accepted without blocking and handled while A waits; then A's messages
// run in order and nothing is left of any repo's queue.
func TestDispatcher_NoHeadOfLineBlocking(t *testing.T) {
	const a, others = "did:plc:a", 300
	release := make(chan struct{})
	var mu sync.Mutex
	var aSeen []int64
	otherDone := 0
	d := NewDispatcher(4, 4, func(ctx context.Context, m *Message) error {
		if m.DID != a {
			mu.Lock()
			otherDone++
			mu.Unlock()
			return nil
		}
		if m.Seq == 1 {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		mu.Lock()
		aSeen = append(aSeen, m.Seq)
		mu.Unlock()
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()

	var seq int64
	for range 3 { // A: one running, two waiting behind it
		seq++
		if err := d.Dispatch(ctx, &Message{Seq: seq, DID: a}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range others {
		seq++
		// A worker's queue used to hold A's messages and every repo hashed
		// to it: Dispatch then blocked on A. Now only the global bound
		// applies, and the other repos drain through the other workers.
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		err := d.Dispatch(dctx, &Message{Seq: seq, DID: fmt.Sprintf("did:plc:o%d", i%50)})
		dcancel()
		if err != nil {
			t.Fatalf("Dispatch %d of another repo while A blocks = %v", i, err)
		}
	}
	for {
		mu.Lock()
		n := otherDone
		mu.Unlock()
		if n == others {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d messages of other repos handled while A blocks", n, others)
		}
		time.Sleep(time.Millisecond)
	}
	if got := d.Watermark(); got != 0 {
		t.Errorf("Watermark = %d with seq 1 still running, want 0", got)
	}
	if st := d.Stats(); st.InFlight != 3 {
		t.Errorf("InFlight = %d, want A's 3", st.InFlight)
	}

	close(release)
	if err := d.Wait(ctx); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if !slices.Equal(aSeen, []int64{1, 2, 3}) {
		t.Errorf("A handled %v, want [1 2 3]", aSeen)
	}
	if got := d.Watermark(); got != seq {
		t.Errorf("Watermark = %d, want %d", got, seq)
	}
	d.mu.Lock()
	repos, ready := len(d.repos), d.ready.len()
	d.mu.Unlock()
	if repos != 0 || ready != 0 {
		t.Errorf("%d repo queues and %d ready repos left after all was handled", repos, ready)
	}
	if len(d.slots) != 0 {
		t.Errorf("%d slots still held", len(d.slots))
	}
	cancel()
	<-runErr
}

// TestDispatcher_GlobalBound checks that Dispatch blocks once
// workers·(queue+1) messages are unhandled, whether they belong to one repo
// or to many, and resumes as soon as one is handled.
func TestDispatcher_GlobalBound(t *testing.T) {
	const workers, queue, limit = 2, 1, 4
	tests := []struct {
		name string
		did  func(i int) string
	}{
		{"one repo", func(int) string { return "did:plc:x" }},
		{"distinct repos", func(i int) string { return fmt.Sprintf("did:plc:r%d", i) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			d := NewDispatcher(workers, queue, func(ctx context.Context, m *Message) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			runErr := make(chan error, 1)
			go func() { runErr <- d.Run(ctx) }()

			for i := range limit {
				if err := d.Dispatch(ctx, &Message{Seq: int64(i + 1), DID: tt.did(i)}); err != nil {
					t.Fatalf("Dispatch %d under the bound = %v", i+1, err)
				}
			}
			short, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
			err := d.Dispatch(short, &Message{Seq: limit + 1, DID: tt.did(limit)})
			scancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Dispatch beyond the bound = %v, want to block until the deadline", err)
			}

			release <- struct{}{} // one handled: room for one more
			if err := d.Dispatch(ctx, &Message{Seq: limit + 2, DID: tt.did(limit + 1)}); err != nil {
				t.Fatalf("Dispatch after one was handled = %v", err)
			}
			close(release)
			if err := d.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			// The Dispatch that failed keeps the watermark below it.
			if got := d.Watermark(); got != limit {
				t.Errorf("Watermark = %d, want %d", got, limit)
			}
			if st := d.Stats(); st.Handled != limit+1 {
				t.Errorf("Handled = %d, want %d", st.Handled, limit+1)
			}
			cancel()
			<-runErr
		})
	}
}

// TestDispatcher_Fairness queues a long run of one repo before one message
// of another, on a single worker: the other repo takes its turn after one
// message of the first instead of waiting for all of them.
func TestDispatcher_Fairness(t *testing.T) {
	var mu sync.Mutex
	var order []string
	d := NewDispatcher(1, 100, func(ctx context.Context, m *Message) error {
		mu.Lock()
		order = append(order, m.DID)
		mu.Unlock()
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var seq int64
	for range 50 {
		seq++
		if err := d.Dispatch(ctx, &Message{Seq: seq, DID: "did:plc:long"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, did := range []string{"did:plc:b", "did:plc:c"} {
		seq++
		if err := d.Dispatch(ctx, &Message{Seq: seq, DID: did}); err != nil {
			t.Fatal(err)
		}
	}
	go d.Run(ctx)
	if err := d.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Round robin: long, b, c, long, long, ...
	if b, c := slices.Index(order, "did:plc:b"), slices.Index(order, "did:plc:c"); b != 1 || c != 2 {
		t.Errorf("b handled at %d and c at %d of %d, want 1 and 2", b, c, len(order))
	}
}

func TestRing(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	var q ring[int]
	var model []int
	next := 0
	for range 5000 {
		if len(model) == 0 || r.IntN(3) > 0 {
			q.push(next)
			model = append(model, next)
			next++
		} else {
			if got := q.pop(); got != model[0] {
				t.Fatalf("pop = %d, want %d", got, model[0])
			}
			model = model[1:]
		}
		if q.len() != len(model) {
			t.Fatalf("len = %d, want %d", q.len(), len(model))
		}
	}
}

// BenchmarkDispatcher_Backlog dispatches a backlog of 100,000 messages over
// 1,000 repos in random order to 128 workers (queue 4, as the indexer
// does), with a handler that either waits ~200µs (a write waiting for its
// group commit) or does a little CPU work.
func BenchmarkDispatcher_Backlog(b *testing.B) {
	const n, repos, workers, queue = 100_000, 1000, 128, 4
	r := rand.New(rand.NewPCG(1, 1))
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = Message{Seq: int64(i + 1), Kind: KindCommit, DID: fmt.Sprintf("did:plc:repo%04d", r.IntN(repos))}
	}
	handlers := []struct {
		name string
		h    Handler
	}{
		{"sleep200us", func(context.Context, *Message) error { time.Sleep(200 * time.Microsecond); return nil }},
		{"work", func(_ context.Context, m *Message) error {
			h := uint64(m.Seq)
			for range 200 {
				h = h*6364136223846793005 + 1442695040888963407
			}
			if h == 0 {
				return errors.New("unreachable")
			}
			return nil
		}},
	}
	for _, hc := range handlers {
		b.Run(hc.name, func(b *testing.B) {
			for b.Loop() {
				d := NewDispatcher(workers, queue, hc.h)
				ctx, cancel := context.WithCancel(b.Context())
				done := make(chan struct{})
				go func() { d.Run(ctx); close(done) }()
				for i := range msgs {
					m := msgs[i]
					if err := d.Dispatch(ctx, &m); err != nil {
						b.Fatal(err)
					}
				}
				if err := d.Wait(ctx); err != nil {
					b.Fatal(err)
				}
				cancel()
				<-done
			}
			b.ReportMetric(float64(b.N)*n/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
