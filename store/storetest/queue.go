package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

func testQueueOrder(t *testing.T, s store.Store) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 500, time.UTC)
	type entry struct {
		did string
		due time.Time
	}
	scan := func() []entry {
		var out []entry
		view(t, s, func(tx store.ReadTx) error {
			return tx.ScanQueue(func(did string, due time.Time) (bool, error) {
				out = append(out, entry{did, due.UTC()})
				return true, nil
			})
		})
		return out
	}
	update(t, s, func(tx store.Tx) error {
		for _, e := range []entry{
			{"did:plc:late", base.Add(2 * time.Hour)},
			{"did:plc:b", base.Add(time.Hour)},
			{"did:plc:a", base.Add(time.Hour)}, // same due: DID order
			{"did:plc:ab", base.Add(time.Hour)},
			{"did:plc:nano", base.Add(time.Hour + time.Nanosecond)},
			{"did:plc:zero", time.Time{}}, // the zero time: due long ago
			{"did:plc:old", time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)},
			{"did:plc:future", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
			{"did:plc:negative", time.Unix(-1, 5)},
			{"did:plc:epoch", time.Unix(0, 0)},
			{"did:plc:moved", base.Add(3 * time.Hour)},
			{"did:plc:gone", base},
		} {
			if err := tx.Enqueue(e.did, e.due); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		if err := tx.Enqueue("did:plc:moved", base.Add(-time.Hour)); err != nil { // replaces its entry
			return err
		}
		if err := tx.Dequeue("did:plc:gone"); err != nil {
			return err
		}
		return tx.Dequeue("did:plc:never-queued")
	})
	want := []entry{
		{"did:plc:zero", time.Time{}},
		{"did:plc:old", time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"did:plc:negative", time.Unix(-1, 5).UTC()},
		{"did:plc:epoch", time.Unix(0, 0).UTC()},
		{"did:plc:moved", base.Add(-time.Hour)},
		{"did:plc:a", base.Add(time.Hour)},
		{"did:plc:ab", base.Add(time.Hour)},
		{"did:plc:b", base.Add(time.Hour)},
		{"did:plc:nano", base.Add(time.Hour + time.Nanosecond)},
		{"did:plc:late", base.Add(2 * time.Hour)},
		{"did:plc:future", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	got := scan()
	if len(got) != len(want) {
		t.Fatalf("ScanQueue =\n%v\nwant\n%v", got, want)
	}
	for i := range want {
		if got[i].did != want[i].did || !got[i].due.Equal(want[i].due) {
			t.Errorf("queue[%d] = %s %v, want %s %v", i, got[i].did, got[i].due, want[i].did, want[i].due)
		}
	}
}

func testBufferOrder(t *testing.T, s store.Store) {
	const did, other = "did:plc:buf", "did:plc:bufx"
	scan := func(d string) []store.BufferedCommit {
		var out []store.BufferedCommit
		view(t, s, func(tx store.ReadTx) error {
			return tx.ScanBuffer(d, func(c *store.BufferedCommit) (bool, error) {
				out = append(out, *c)
				return true, nil
			})
		})
		return out
	}
	update(t, s, func(tx store.Tx) error {
		for i, rev := range []string{"3kc", "3ka", "3kb", "3k", "3kaa"} {
			for _, d := range []string{did, other} {
				c := &store.BufferedCommit{DID: d, Rev: rev, Seq: int64(100 + i), Source: "wss://relay.example", Data: []byte(d + rev)}
				if err := tx.PutBuffer(c); err != nil {
					return err
				}
			}
		}
		// Same DID and rev: replaced.
		return tx.PutBuffer(&store.BufferedCommit{DID: did, Rev: "3kb", Seq: 999, Source: "other", Data: []byte("replaced")})
	})
	want := []store.BufferedCommit{
		{DID: did, Rev: "3k", Seq: 103, Source: "wss://relay.example", Data: []byte(did + "3k")},
		{DID: did, Rev: "3ka", Seq: 101, Source: "wss://relay.example", Data: []byte(did + "3ka")},
		{DID: did, Rev: "3kaa", Seq: 104, Source: "wss://relay.example", Data: []byte(did + "3kaa")},
		{DID: did, Rev: "3kb", Seq: 999, Source: "other", Data: []byte("replaced")},
		{DID: did, Rev: "3kc", Seq: 100, Source: "wss://relay.example", Data: []byte(did + "3kc")},
	}
	if got := scan(did); !reflect.DeepEqual(got, want) {
		t.Errorf("ScanBuffer =\n%+v\nwant\n%+v", got, want)
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteBuffer(did, "3ka"); err != nil {
			return err
		}
		return tx.DeleteBuffer(did, "3kzz") // absent
	})
	if got := scan(did); !reflect.DeepEqual(got, append(want[:1:1], want[2:]...)) {
		t.Errorf("ScanBuffer after DeleteBuffer(3ka) =\n%+v", got)
	}
	update(t, s, func(tx store.Tx) error { return tx.DeleteBuffer(did, "") })
	if got := scan(did); len(got) != 0 {
		t.Errorf("ScanBuffer after DeleteBuffer(all) = %+v", got)
	}
	if got := scan(other); len(got) != 5 {
		t.Errorf("DeleteBuffer(%s, \"\") touched %s: %d left, want 5", did, other, len(got))
	}
}

func testMeta(t *testing.T, s store.Store) {
	if _, err := getMeta(t, s, "cursor/relay"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Meta(absent) error = %v, want ErrNotFound", err)
	}
	update(t, s, func(tx store.Tx) error {
		for k, v := range map[string][]byte{
			"cursor/relay": []byte("12345"), "filter": []byte(`{"signals":["a.b"]}`),
			"empty": {}, "binary": {0, 1, 0xff},
		} {
			if err := tx.PutMeta(k, v); err != nil {
				return err
			}
		}
		// Read inside the writing transaction.
		v, err := tx.Meta("cursor/relay")
		if err != nil || string(v) != "12345" {
			t.Errorf("Meta inside Update = %q, %v", v, err)
		}
		return nil
	})
	for k, want := range map[string]string{"cursor/relay": "12345", "filter": `{"signals":["a.b"]}`, "empty": "", "binary": "\x00\x01\xff"} {
		if v, err := getMeta(t, s, k); err != nil || string(v) != want {
			t.Errorf("Meta(%q) = %q, %v; want %q", k, v, err, want)
		}
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutMeta("cursor/relay", []byte("12346")); err != nil {
			return err
		}
		if err := tx.DeleteMeta("filter"); err != nil {
			return err
		}
		return tx.DeleteMeta("never")
	})
	if v, err := getMeta(t, s, "cursor/relay"); err != nil || string(v) != "12346" {
		t.Errorf("Meta after overwrite = %q, %v", v, err)
	}
	if _, err := getMeta(t, s, "filter"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Meta after DeleteMeta: error = %v, want ErrNotFound", err)
	}
}
