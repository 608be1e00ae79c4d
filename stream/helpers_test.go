package stream_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

// postCounter makes every post unique, so each has its own block.
var postCounter atomic.Int64

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// openStore opens a bolt store at path (a new one in a temp dir if "").
func openStore(t testing.TB, path string) *boltstore.DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "cistern.db")
	}
	db, err := boltstore.Open(path, &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newLog returns a Log over st, closed at cleanup.
func newLog(t testing.TB, st store.Store, opts stream.Options) *stream.Log {
	t.Helper()
	l := stream.New(st, opts)
	t.Cleanup(l.Close)
	return l
}

var encMode = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// post returns a DAG-CBOR post record and its CID.
func post(text string) (value, c []byte) {
	value, err := encMode.Marshal(map[string]any{
		"$type":     "app.bsky.feed.post",
		"text":      text,
		"createdAt": "2026-01-02T03:04:05.000Z",
	})
	if err != nil {
		panic(err)
	}
	id, err := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: multihash.SHA2_256, MhLength: -1}.Sum(value)
	if err != nil {
		panic(err)
	}
	return value, id.Bytes()
}

// recordEvent returns a create event of a post whose text is unique to i.
func recordEvent(i int, did, collection string, live bool) *store.Event {
	v, c := post(fmt.Sprintf("post number %d", i))
	return &store.Event{
		Kind: store.KindRecord, Live: live, DID: did, Rev: fmt.Sprintf("3l%011d", i),
		Time: t0.Add(time.Duration(i) * time.Second), Collection: collection,
		RKey: fmt.Sprintf("3k%011d", i), Action: store.ActionCreate, CID: c, Record: v,
	}
}

// appendEvents appends evs in one transaction and notifies l.
func appendEvents(t testing.TB, st store.Store, l *stream.Log, evs ...*store.Event) uint64 {
	t.Helper()
	err := st.Update(context.Background(), func(tx store.Tx) error {
		for _, ev := range evs {
			if err := tx.AppendEvent(ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	newest := evs[len(evs)-1].ID
	if l != nil {
		l.Notify(newest)
	}
	return newest
}

// appendPosts appends n post events (one transaction) and returns the
// newest id.
func appendPosts(t testing.TB, st store.Store, l *stream.Log, n int) uint64 {
	t.Helper()
	evs := make([]*store.Event, n)
	for i := range evs {
		evs[i] = recordEvent(int(postCounter.Add(1)), "did:plc:alice", "app.bsky.feed.post", true)
	}
	return appendEvents(t, st, l, evs...)
}

// collect reads events from sub until it has read one with id `until`, the
// subscription ends, or 10 seconds pass.
func collect(t testing.TB, sub *stream.Subscription, until uint64) []uint64 {
	t.Helper()
	var ids []uint64
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return ids
			}
			ids = append(ids, ev.ID)
			if ev.ID >= until {
				return ids
			}
		case <-timeout:
			t.Fatalf("timed out after ids %v, waiting for %d", tail(ids), until)
		}
	}
}

// drain reads events from sub until it has passed position `until`, and
// returns them. Position moves after a page is in the channel, so once it
// reaches until and the channel is empty, every matching event was read.
func drain(t testing.TB, sub *stream.Subscription, until uint64) []*store.Event {
	t.Helper()
	var evs []*store.Event
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return evs
			}
			evs = append(evs, ev)
			continue
		default:
		}
		if sub.Position() >= until && len(sub.Events()) == 0 {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out at position %d, waiting for %d", sub.Position(), until)
		}
		time.Sleep(time.Millisecond)
	}
}

func ids(evs []*store.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func tail(ids []uint64) []uint64 {
	if len(ids) > 10 {
		return ids[len(ids)-10:]
	}
	return ids
}
