package tapcompat

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

// logFixture is an event log over a bolt store, written directly.
type logFixture struct {
	t   *testing.T
	st  *boltstore.DB
	log *stream.Log
}

func newLogFixture(t *testing.T, path string) *logFixture {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "c.db")
	}
	st, err := boltstore.Open(path, &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	l := stream.New(st, stream.Options{})
	t.Cleanup(func() { l.Close(); st.Close() })
	return &logFixture{t: t, st: st, log: l}
}

// append writes identity events (the simplest kind) for the given repos;
// a "L:" prefix marks a live one. It returns their ids.
func (f *logFixture) append(specs ...string) []uint64 {
	f.t.Helper()
	var ids []uint64
	err := f.st.Update(context.Background(), func(tx store.Tx) error {
		for _, s := range specs {
			live := false
			if rest, ok := cutPrefix(s, "L:"); ok {
				live, s = true, rest
			}
			ev := &store.Event{Kind: store.KindIdentity, Live: live, DID: s, Time: time.Now()}
			if err := tx.AppendEvent(ev); err != nil {
				return err
			}
			ids = append(ids, ev.ID)
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.log.Notify(ids[len(ids)-1])
	return ids
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

// startOutbox runs an outbox over the fixture's log until the test ends
// (or the returned stop is called).
func startOutbox(t *testing.T, f *logFixture, opts OutboxOptions) (*Outbox, func()) {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "test"
	}
	opts.Translate = func(_ context.Context, ev *store.Event) ([]byte, error) {
		return fmt.Appendf(nil, "%d", ev.ID), nil
	}
	if opts.SaveInterval == 0 {
		opts.SaveInterval = 10 * time.Millisecond
	}
	o, err := NewOutbox(f.log, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("outbox Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return o, stop
}

// take returns the ids Next hands out until none is ready for a moment.
func take(t *testing.T, o *Outbox, owner any) []uint64 {
	t.Helper()
	var ids []uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		d, err := o.Next(ctx, owner)
		cancel()
		if err != nil {
			return ids
		}
		ids = append(ids, d.ID)
	}
}

func ackAll(t *testing.T, o *Outbox, ids ...uint64) {
	t.Helper()
	for _, id := range ids {
		if !o.Ack(id) {
			t.Fatalf("ack %d not taken", id)
		}
	}
}

// TestOutbox_LiveEventsAreBarriers follows tap's README example
// H1, H2, L1, H3, H4, L2, H5 for one repo, with another repo's events
// flowing beside it.
func TestOutbox_LiveEventsAreBarriers(t *testing.T) {
	f := newLogFixture(t, "")
	a, b := "did:plc:aaaa", "did:plc:bbbb"
	ids := f.append(a, a, "L:"+a, b, a, a, "L:"+a, "L:"+b, a, b)
	h1, h2, l1, b1, h3, h4, l2, bl, h5, b2 := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7], ids[8], ids[9]
	o, _ := startOutbox(t, f, OutboxOptions{})
	me := &struct{}{}

	steps := []struct {
		name string
		ack  []uint64
		want []uint64
	}{
		{"backfill events go together; the live events wait", nil, []uint64{h1, h2, b1}},
		{"L1 goes alone once H1 and H2 are acked", []uint64{h1, h2}, []uint64{l1}},
		{"b's live event once b1 is acked", []uint64{b1}, []uint64{bl}},
		{"b's live event releases b's next", []uint64{bl}, []uint64{b2}},
		{"H3 and H4 after L1", []uint64{l1}, []uint64{h3, h4}},
		{"nothing while H4 is out", []uint64{h3}, nil},
		{"L2 after H4", []uint64{h4}, []uint64{l2}},
		{"H5 after L2", []uint64{l2}, []uint64{h5}},
	}
	for _, s := range steps {
		ackAll(t, o, s.ack...)
		got := take(t, o, me)
		slices.Sort(got)
		want := slices.Sorted(slices.Values(s.want))
		if !slices.Equal(got, want) {
			t.Fatalf("%s: got %v, want %v", s.name, got, want)
		}
	}
}

// TestOutbox_PositionIsTheAckedPrefix checks that the stored position
// never passes an unacknowledged event, that a new run delivers from it
// (an event acked out of order comes again: at least once), and that a
// skipped event does not hold the position back.
func TestOutbox_PositionIsTheAckedPrefix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	f := newLogFixture(t, path)
	ids := f.append("did:plc:a1", "did:plc:a2", "did:plc:a3", "did:plc:a4")
	o, stop := startOutbox(t, f, OutboxOptions{Name: "pos"})
	me := &struct{}{}
	got := take(t, o, me)
	if len(got) != 4 {
		t.Fatalf("delivered %v, want all four", got)
	}
	ackAll(t, o, ids[0], ids[2], ids[3])
	waitUntil(t, "position saved", func() bool { return o.Stats().Acked == ids[0] })
	time.Sleep(50 * time.Millisecond) // a few save intervals: it must stay there
	if a := o.Stats().Acked; a != ids[0] {
		t.Fatalf("position %d passed the unacknowledged event %d", a, ids[1])
	}
	stop()

	c, err := f.log.Consumer(context.Background(), "pos")
	if err != nil || c.Acked != ids[0] {
		t.Fatalf("stored consumer = %+v, %v; want position %d", c, err, ids[0])
	}
	o2, stop2 := startOutbox(t, f, OutboxOptions{Name: "pos"})
	again := take(t, o2, me)
	if want := ids[1:]; !slices.Equal(again, want) {
		t.Fatalf("after restart delivered %v, want %v", again, want)
	}
	ackAll(t, o2, again...)
	waitUntil(t, "position at the end", func() bool { return o2.Stats().Acked == ids[3] })
	stop2()
	if st := o2.Stats(); st.Pending != 0 {
		t.Fatalf("pending after stop: %+v", st)
	}
}

// TestOutbox_RequeueAndTimeout checks both ways an unacknowledged event is
// sent again: its holder goes away, or the retry timeout passes.
func TestOutbox_RequeueAndTimeout(t *testing.T) {
	f := newLogFixture(t, "")
	ids := f.append("did:plc:r1", "did:plc:r2")
	o, _ := startOutbox(t, f, OutboxOptions{RetryTimeout: 300 * time.Millisecond})
	conn1, conn2 := &struct{ int }{1}, &struct{ int }{2}
	if got := take(t, o, conn1); len(got) != 2 {
		t.Fatalf("first connection got %v", got)
	}
	if n := o.RequeueOwner(conn1); n != 2 {
		t.Fatalf("requeued %d, want 2", n)
	}
	ackAll(t, o, ids[0]) // a late ack of the old connection still counts
	got := take(t, o, conn2)
	if !slices.Equal(got, ids[1:]) {
		t.Fatalf("second connection got %v, want %v", got, ids[1:])
	}
	// Not acked: after the retry timeout it is sent again.
	var again []uint64
	waitUntil(t, "timed-out redelivery", func() bool {
		again = append(again, take(t, o, conn2)...)
		return len(again) > 0
	})
	if !slices.Equal(again, ids[1:]) {
		t.Fatalf("redelivered %v, want %v", again, ids[1:])
	}
	if st := o.Stats(); st.Redelivered != 2 || st.Delivered != 4 {
		t.Fatalf("stats %+v: want 4 deliveries of which 2 redeliveries", st)
	}
}

// TestOutbox_WindowBoundsPending checks reading pauses at Window
// unacknowledged events and resumes as acks free room.
func TestOutbox_WindowBoundsPending(t *testing.T) {
	f := newLogFixture(t, "")
	var specs []string
	for i := range 10 {
		specs = append(specs, fmt.Sprintf("did:plc:w%d", i))
	}
	ids := f.append(specs...)
	o, _ := startOutbox(t, f, OutboxOptions{Window: 3})
	me := &struct{}{}
	got := take(t, o, me)
	if !slices.Equal(got, ids[:3]) {
		t.Fatalf("with a window of 3 got %v", got)
	}
	if p := o.Stats().Pending; p != 3 {
		t.Fatalf("pending %d, want 3", p)
	}
	ackAll(t, o, ids[1])
	if got := take(t, o, me); !slices.Equal(got, ids[3:4]) {
		t.Fatalf("after one ack got %v, want %v", got, ids[3:4])
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
