package storetest

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// eventAt calls EventAtTime in a View.
func eventAt(t *testing.T, s store.Store, tm time.Time) uint64 {
	t.Helper()
	var id uint64
	view(t, s, func(tx store.ReadTx) (err error) {
		id, err = tx.EventAtTime(tm)
		return err
	})
	return id
}

// appendAt appends one identity event per time, in one Update.
func appendAt(t *testing.T, s store.Store, secs ...int64) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for _, sec := range secs {
			if err := tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:t", Time: time.Unix(sec, 0)}); err != nil {
				return err
			}
		}
		return nil
	})
}

func testEventAtTime(t *testing.T, s store.Store) {
	at := func(sec int64) time.Time { return time.Unix(sec, 0) }
	if id := eventAt(t, s, at(0)); id != 0 {
		t.Errorf("EventAtTime on an empty log = %d, want 0", id)
	}
	// Ids 1..6 with times 10, 20, 20, 30, 25, 40: the running maximum is
	// 10, 20, 20, 30, 30, 40. Two transactions, and a failed one between.
	appendAt(t, s, 10, 20, 20)
	errBoom := errors.New("boom")
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:t", Time: at(1000)}); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("failed Update returned %v", err)
	}
	appendAt(t, s, 30, 25, 40)
	for _, tc := range []struct {
		sec  int64
		nsec int64
		want uint64
	}{
		{-1 << 40, 0, 1}, {0, 0, 1}, {10, 0, 1}, {10, 1, 2}, {20, 0, 2}, {20, 1, 4},
		{25, 0, 4}, {30, 0, 4}, {31, 0, 6}, {40, 0, 6}, {40, 1, 0}, {1000, 0, 0},
	} {
		if got := eventAt(t, s, time.Unix(tc.sec, tc.nsec)); got != tc.want {
			t.Errorf("EventAtTime(%d.%09d) = %d, want %d", tc.sec, tc.nsec, got, tc.want)
		}
	}

	// Pruned events still answer, below the oldest retained id.
	oldestNow := func() uint64 {
		var o uint64
		view(t, s, func(tx store.ReadTx) (err error) {
			o, _, err = tx.EventBounds()
			return err
		})
		return o
	}
	prune := func(through uint64) {
		update(t, s, func(tx store.Tx) error { _, err := tx.PruneEvents(through, 0); return err })
	}
	prune(3) // oldest 4 (time 30)
	for _, sec := range []int64{0, 10, 15, 20} {
		if got, o := eventAt(t, s, at(sec)), oldestNow(); got == 0 || got >= o {
			t.Errorf("after pruning 1-3: EventAtTime(%d) = %d, want an id below the oldest retained %d", sec, got, o)
		}
	}
	for _, tc := range []struct {
		sec  int64
		want uint64
	}{{21, 4}, {30, 4}, {31, 6}, {41, 0}} {
		if got := eventAt(t, s, at(tc.sec)); got != tc.want {
			t.Errorf("after pruning 1-3: EventAtTime(%d) = %d, want %d", tc.sec, got, tc.want)
		}
	}
	prune(4) // oldest 5 (time 25, running maximum 30 from event 4)
	for _, sec := range []int64{10, 21, 26, 30} {
		if got, o := eventAt(t, s, at(sec)), oldestNow(); got == 0 || got >= o {
			t.Errorf("after pruning 1-4: EventAtTime(%d) = %d, want an id below the oldest retained %d", sec, got, o)
		}
	}
	if got := eventAt(t, s, at(31)); got != 6 {
		t.Errorf("after pruning 1-4: EventAtTime(31) = %d, want 6", got)
	}
	prune(6)               // nothing retained; the running maximum (40) is remembered
	appendAt(t, s, 35, 50) // ids 7, 8
	if got := eventAt(t, s, at(36)); got == 0 || got >= 7 {
		t.Errorf("after pruning all: EventAtTime(36) = %d, want an id below 7 (event 6 at 40 was pruned)", got)
	}
	for _, tc := range []struct {
		sec  int64
		want uint64
	}{{41, 8}, {50, 8}, {51, 0}} {
		if got := eventAt(t, s, at(tc.sec)); got != tc.want {
			t.Errorf("after pruning all: EventAtTime(%d) = %d, want %d", tc.sec, got, tc.want)
		}
	}
}

// testEventAtTimeMatchesScan checks EventAtTime against its definition,
// computed by scanning, over random times and prunes.
func testEventAtTimeMatchesScan(t *testing.T, s store.Store) {
	rng := rand.New(rand.NewPCG(1, 2))
	var times []int64 // by id - 1
	base := int64(1_700_000_000_000)
	for batch := 0; batch < 20; batch++ {
		var secs []int64
		for i := 0; i < 1+rng.IntN(20); i++ {
			// Mostly rising, sometimes equal or a little behind.
			base += int64(rng.IntN(5)) - 1
			secs = append(secs, base)
		}
		update(t, s, func(tx store.Tx) error {
			for _, ms := range secs {
				if err := tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:t", Time: time.UnixMilli(ms)}); err != nil {
					return err
				}
			}
			return nil
		})
		times = append(times, secs...)
		if batch%5 == 4 {
			through := uint64(rng.IntN(len(times)) + 1)
			update(t, s, func(tx store.Tx) error { _, err := tx.PruneEvents(through, 0); return err })
		}
		var oldest uint64
		view(t, s, func(tx store.ReadTx) (err error) {
			oldest, _, err = tx.EventBounds()
			return err
		})
		for probe := times[0] - 2; probe <= base+2; probe++ {
			// The definition: the first id at which the running maximum
			// of times reaches the probe.
			var want uint64
			var top int64 = -1 << 62
			for i, ms := range times {
				top = max(top, ms)
				if top >= probe {
					want = uint64(i + 1)
					break
				}
			}
			got := eventAt(t, s, time.UnixMilli(probe))
			switch {
			case oldest != 0 && want >= oldest:
				if got != want {
					t.Fatalf("batch %d: EventAtTime(%d) = %d, want %d (oldest retained %d)", batch, probe, got, want, oldest)
				}
			case want == 0:
				if got != 0 {
					t.Fatalf("batch %d: EventAtTime(%d) = %d, want 0", batch, probe, got)
				}
			default: // the first such event was pruned
				if got == 0 || (oldest != 0 && got >= oldest) {
					t.Fatalf("batch %d: EventAtTime(%d) = %d, want an id below the oldest retained %d (event %d was pruned)",
						batch, probe, got, oldest, want)
				}
			}
		}
	}
}
