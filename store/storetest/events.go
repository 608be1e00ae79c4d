package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// utcEvent returns ev with its time in UTC, for comparison.
func utcEvent(ev store.Event) store.Event {
	ev.Time = ev.Time.UTC()
	return ev
}

func testEventRoundTrip(t *testing.T, s store.Store) {
	v := value("event value")
	evs := []*store.Event{
		{Kind: store.KindRecord, Live: true, DID: "did:plc:a", Rev: "3k1", Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("Y", -7200)),
			Collection: "app.bsky.feed.post", RKey: "3k1", Action: store.ActionCreate, CID: cidOf(v), Record: v},
		{Kind: store.KindRecord, DID: "did:plc:a", Rev: "3k2", Time: time.Unix(1700000001, 0).UTC(),
			Collection: "app.bsky.feed.post", RKey: "3k1", Action: store.ActionDelete},
		{Kind: store.KindIdentity, Live: true, DID: "did:plc:b", Time: time.Unix(1700000002, 999).UTC(), Handle: "bob.test"},
		{Kind: store.KindAccount, Live: true, DID: "did:plc:c", Time: time.Unix(1700000003, 0).UTC(), Active: false, Status: "takendown"},
		{Kind: store.KindAccount, DID: "did:plc:c", Time: time.Unix(1700000004, 0).UTC(), Active: true},
		{Kind: store.KindRepo, DID: "did:plc:d", Rev: "3k9", Time: time.Unix(1700000005, 0).UTC(), Status: "error",
			Error: "fetch: getRepo answered 502 Bad Gateway"},
	}
	update(t, s, func(tx store.Tx) error {
		for _, ev := range evs {
			if err := tx.AppendEvent(ev); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.ReadTx) error {
		for i, want := range evs {
			if want.ID != uint64(i+1) {
				t.Errorf("event %d got id %d, want %d", i, want.ID, i+1)
			}
			got, err := tx.Event(want.ID)
			if err != nil {
				return fmt.Errorf("Event(%d): %w", want.ID, err)
			}
			if g, w := utcEvent(*got), utcEvent(*want); !reflect.DeepEqual(g, w) {
				t.Errorf("Event(%d) =\n%+v\nwant\n%+v", want.ID, g, w)
			}
		}
		for _, id := range []uint64{0, 7, 1 << 40} {
			if _, err := tx.Event(id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Event(%d) error = %v, want ErrNotFound", id, err)
			}
		}
		return nil
	})
}

func testEventScanAndPrune(t *testing.T, s store.Store) {
	bounds := func() (uint64, uint64) {
		var o, n uint64
		view(t, s, func(tx store.ReadTx) (err error) {
			o, n, err = tx.EventBounds()
			return err
		})
		return o, n
	}
	scan := func(after uint64) []uint64 {
		var ids []uint64
		view(t, s, func(tx store.ReadTx) error {
			return tx.ScanEvents(after, func(ev *store.Event) (bool, error) {
				if ev.Rev != fmt.Sprint(ev.ID) {
					t.Errorf("event %d has rev %q: events out of place", ev.ID, ev.Rev)
				}
				ids = append(ids, ev.ID)
				return true, nil
			})
		})
		return ids
	}
	prune := func(through uint64, limit int) int {
		var n int
		update(t, s, func(tx store.Tx) (err error) {
			n, err = tx.PruneEvents(through, limit)
			return err
		})
		return n
	}
	if o, n := bounds(); o != 0 || n != 0 {
		t.Errorf("EventBounds of an empty log = %d, %d, want 0, 0", o, n)
	}
	if n := prune(100, 0); n != 0 {
		t.Errorf("PruneEvents of an empty log = %d", n)
	}
	for i := 1; i <= 10; i++ {
		update(t, s, func(tx store.Tx) error {
			return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:a", Rev: fmt.Sprint(i), Time: time.Unix(int64(i), 0)})
		})
	}
	ids := func(from, to uint64) []uint64 {
		var out []uint64
		for i := from; i <= to; i++ {
			out = append(out, i)
		}
		return out
	}
	for _, tc := range []struct {
		after uint64
		want  []uint64
	}{{0, ids(1, 10)}, {1, ids(2, 10)}, {9, ids(10, 10)}, {10, nil}, {1000, nil}, {^uint64(0), nil}} {
		if got := scan(tc.after); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ScanEvents(%d) = %v, want %v", tc.after, got, tc.want)
		}
	}
	if o, n := bounds(); o != 1 || n != 10 {
		t.Errorf("EventBounds = %d, %d, want 1, 10", o, n)
	}
	if n := prune(5, 2); n != 2 {
		t.Errorf("PruneEvents(5, limit 2) = %d, want 2", n)
	}
	if o, n := bounds(); o != 3 || n != 10 {
		t.Errorf("EventBounds after limited prune = %d, %d, want 3, 10", o, n)
	}
	if n := prune(5, 0); n != 3 {
		t.Errorf("PruneEvents(5) = %d, want 3", n)
	}
	if n := prune(5, 0); n != 0 {
		t.Errorf("PruneEvents(5) again = %d, want 0", n)
	}
	if got := scan(0); !reflect.DeepEqual(got, ids(6, 10)) {
		t.Errorf("ScanEvents after prune = %v, want 6..10", got)
	}
	if c := counts(t, s); c.Events != 5 {
		t.Errorf("Counts().Events = %d, want 5", c.Events)
	}
	if n := prune(^uint64(0), 0); n != 5 {
		t.Errorf("PruneEvents(all) = %d, want 5", n)
	}
	if o, n := bounds(); o != 0 || n != 10 {
		t.Errorf("EventBounds after pruning everything = %d, %d, want 0, 10", o, n)
	}
	var ev store.Event
	update(t, s, func(tx store.Tx) error {
		ev = store.Event{Kind: store.KindIdentity, DID: "did:plc:a", Rev: "11", Time: time.Unix(11, 0)}
		return tx.AppendEvent(&ev)
	})
	if ev.ID != 11 {
		t.Errorf("id after pruning everything = %d, want 11", ev.ID)
	}
	if o, n := bounds(); o != 11 || n != 11 {
		t.Errorf("EventBounds = %d, %d, want 11, 11", o, n)
	}
	if c := counts(t, s); c.Events != 1 {
		t.Errorf("Counts().Events = %d, want 1", c.Events)
	}
}

func testEventIDsContiguous(t *testing.T, s store.Store) {
	errBoom := errors.New("boom")
	var want []string // revs in the order their events were committed
	next := 0
	for i := range 40 {
		fail := i%4 == 3
		n := 1 + i%5
		var revs []string
		err := s.Update(t.Context(), func(tx store.Tx) error {
			revs = revs[:0]
			for j := range n {
				rev := fmt.Sprintf("%d", next+j)
				ev := &store.Event{Kind: store.KindAccount, DID: "did:plc:a", Rev: rev, Active: true, Time: time.Unix(int64(i), 0)}
				if err := tx.AppendEvent(ev); err != nil {
					return err
				}
				revs = append(revs, rev)
			}
			if fail {
				return errBoom
			}
			return nil
		})
		if fail {
			if !errors.Is(err, errBoom) {
				t.Fatalf("failing Update returned %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		next += n
		want = append(want, revs...)
	}
	var got []string
	var id uint64
	view(t, s, func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			id++
			if ev.ID != id {
				t.Errorf("event id %d where %d expected: ids must be 1..N without gaps", ev.ID, id)
				id = ev.ID
			}
			got = append(got, ev.Rev)
			return true, nil
		})
	})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event order =\n%v\nwant\n%v", got, want)
	}
}
