package writer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/store"
)

// TestWriter_EventTimesStrictlyIncrease writes events stamped with one
// time, with times that go back, and in batches where some writes fail,
// and checks that the log's times increase by at least a microsecond from
// each event to the next, and are never earlier than their stamp.
func TestWriter_EventTimesStrictlyIncrease(t *testing.T) {
	w, st := open(t, writer.Options{MaxDelay: 5 * time.Millisecond})
	base := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	boom := errors.New("boom")
	var wg sync.WaitGroup
	stamps := map[string]time.Time{}
	var mu sync.Mutex
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stamp := base.Add(time.Duration(i%5) * time.Millisecond) // repeats and goes back
			err := w.Write(context.Background(), func(tx store.Tx) error {
				for j := 0; j < 3; j++ {
					ev := &store.Event{Kind: store.KindIdentity, DID: "did:plc:w", Rev: string(rune('a'+i)) + string(rune('a'+j)), Time: stamp}
					if err := tx.AppendEvent(ev); err != nil {
						return err
					}
				}
				if i%9 == 0 {
					return boom
				}
				return nil
			})
			if err == nil {
				mu.Lock()
				for j := 0; j < 3; j++ {
					stamps[string(rune('a'+i))+string(rune('a'+j))] = stamp
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	var prev int64
	n := 0
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			n++
			us := ev.Time.UnixMicro()
			if us <= prev {
				t.Errorf("event %d at %d µs, not after the previous event's %d µs", ev.ID, us, prev)
			}
			if stamp := stamps[ev.Rev]; ev.Time.Before(stamp) {
				t.Errorf("event %d at %v, before its stamp %v", ev.ID, ev.Time, stamp)
			}
			prev = us
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(stamps) {
		t.Errorf("%d events in the log, want %d", n, len(stamps))
	}
}
