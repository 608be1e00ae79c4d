package storetest

import (
	"bytes"
	"testing"

	"github.com/cistern-dev/cistern/store"
)

func testBlockRefcounts(t *testing.T, s store.Store) {
	const did, coll = "did:plc:blocks", "app.bsky.feed.like"
	shared := value("shared")
	sharedCID := cidOf(shared)
	other := value("other value")
	otherCID := cidOf(other)
	rec := func(rkey string, v []byte) *store.Record {
		return &store.Record{DID: did, Collection: coll, RKey: rkey, CID: cidOf(v), Rev: "3k", Value: v}
	}
	type state struct {
		sharedRefs, otherRefs uint64
		blocks, bytes         int64
	}
	check := func(step string, want state) {
		t.Helper()
		v, n := blockState(t, s, did, sharedCID)
		if n != want.sharedRefs {
			t.Errorf("%s: refs of shared = %d, want %d", step, n, want.sharedRefs)
		}
		if (v != nil) != (want.sharedRefs > 0) {
			t.Errorf("%s: shared block present = %v, want %v", step, v != nil, want.sharedRefs > 0)
		} else if v != nil {
			equalBytes(t, step+": shared block", v, shared)
		}
		v, n = blockState(t, s, did, otherCID)
		if n != want.otherRefs || (v != nil) != (want.otherRefs > 0) {
			t.Errorf("%s: other block refs %d present %v, want refs %d", step, n, v != nil, want.otherRefs)
		}
		c := counts(t, s)
		if c.Blocks != want.blocks || c.BlockBytes != want.bytes {
			t.Errorf("%s: Counts blocks %d bytes %d, want %d %d", step, c.Blocks, c.BlockBytes, want.blocks, want.bytes)
		}
	}
	sz := int64(len(shared))
	osz := int64(len(other))

	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(rec("a", shared)); err != nil {
			return err
		}
		return tx.PutRecord(rec("b", shared))
	})
	check("two records, one value", state{2, 0, 1, sz})

	update(t, s, func(tx store.Tx) error { return tx.PutRecord(rec("a", shared)) })
	check("replaced with the same value", state{2, 0, 1, sz})

	// Without a value, a record of an already stored block still counts.
	update(t, s, func(tx store.Tx) error {
		return tx.PutRecord(&store.Record{DID: did, Collection: coll, RKey: "c", CID: sharedCID, Rev: "3k"})
	})
	check("third reference, no value passed", state{3, 0, 1, sz})

	update(t, s, func(tx store.Tx) error { return tx.PutRecord(rec("a", other)) })
	check("one replaced by another value", state{2, 1, 2, sz + osz})

	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRecord(did, coll, "b"); err != nil {
			return err
		}
		return tx.DeleteRecord(did, coll, "b") // absent: no second drop
	})
	check("one deleted", state{1, 1, 2, sz + osz})

	// Several changes to one block inside one transaction.
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRecord(did, coll, "c"); err != nil {
			return err
		}
		if err := tx.PutRecord(rec("d", shared)); err != nil {
			return err
		}
		return tx.DeleteRecord(did, coll, "d")
	})
	check("deleted, re-added and deleted in one transaction", state{0, 1, 1, osz})

	update(t, s, func(tx store.Tx) error { return tx.DeleteRecord(did, coll, "a") })
	check("all deleted", state{0, 0, 0, 0})

	// A delete event holds no reference.
	update(t, s, func(tx store.Tx) error {
		return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: did, Collection: coll, RKey: "a", Action: store.ActionDelete})
	})
	check("delete event", state{0, 0, 0, 0})

	// Blocks are per repo: the same value in two repos is two blocks, each
	// with its own references.
	const did2 = "did:plc:blocks2"
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(rec("a", shared)); err != nil {
			return err
		}
		r2 := rec("a", shared)
		r2.DID = did2
		if err := tx.PutRecord(r2); err != nil {
			return err
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: did2, Collection: coll, RKey: "a",
			Action: store.ActionCreate, CID: sharedCID, Record: shared})
	})
	check("same value in two repos", state{1, 0, 2, 2 * sz})
	if v, n := blockState(t, s, did2, sharedCID); n != 2 || v == nil {
		t.Errorf("block of the second repo: refs %d present %v, want 2 true", n, v != nil)
	}
	update(t, s, func(tx store.Tx) error { return tx.DeleteRecord(did, coll, "a") })
	check("deleted in the first repo", state{0, 0, 1, sz})
	if v, n := blockState(t, s, did2, sharedCID); n != 2 || !bytes.Equal(v, shared) {
		t.Errorf("block of the second repo after the first dropped its own: refs %d value %x, want 2 %x", n, v, shared)
	}
}

func testBlockReclaimedAfterPrune(t *testing.T, s store.Store) {
	r := newRecord("did:plc:prune", "app.bsky.feed.post", "3k1", "first version")
	r2 := newRecord(r.DID, r.Collection, r.RKey, "second version")
	var create, upd *store.Event
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		create = recordEvent(r)
		return tx.AppendEvent(create)
	})
	if v, n := blockState(t, s, r.DID, r.CID); n != 2 || v == nil {
		t.Fatalf("after record + event: refs %d present %v, want 2 true", n, v != nil)
	}
	// The record moves on and is then deleted; the events still reference
	// both values.
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(r2); err != nil {
			return err
		}
		upd = recordEvent(r2)
		upd.Action = store.ActionUpdate
		if err := tx.AppendEvent(upd); err != nil {
			return err
		}
		if err := tx.DeleteRecord(r.DID, r.Collection, r.RKey); err != nil {
			return err
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Collection: r.Collection, RKey: r.RKey, Action: store.ActionDelete})
	})
	for _, c := range []struct {
		ev  *store.Event
		val []byte
	}{{create, r.Value}, {upd, r2.Value}} {
		v, n := blockState(t, s, c.ev.DID, c.ev.CID)
		if n != 1 {
			t.Errorf("refs of event %d's value = %d, want 1", c.ev.ID, n)
		}
		equalBytes(t, "block of a deleted record's event", v, c.val)
		view(t, s, func(tx store.ReadTx) error {
			ev, err := tx.Event(c.ev.ID)
			if err != nil {
				return err
			}
			equalBytes(t, "Event().Record", ev.Record, c.val)
			return nil
		})
	}
	if c := counts(t, s); c.Blocks != 2 || c.BlockBytes != int64(len(r.Value)+len(r2.Value)) {
		t.Errorf("Counts before prune: blocks %d bytes %d, want 2 %d", c.Blocks, c.BlockBytes, len(r.Value)+len(r2.Value))
	}

	// Pruning the first event frees the first value only.
	update(t, s, func(tx store.Tx) error {
		n, err := tx.PruneEvents(create.ID, 0)
		if n != 1 {
			t.Errorf("PruneEvents(%d) = %d, want 1", create.ID, n)
		}
		return err
	})
	if v, n := blockState(t, s, r.DID, r.CID); v != nil || n != 0 {
		t.Errorf("first value after prune: present %v refs %d, want reclaimed", v != nil, n)
	}
	if v, n := blockState(t, s, r2.DID, r2.CID); v == nil || n != 1 {
		t.Errorf("second value after first prune: present %v refs %d, want kept with 1", v != nil, n)
	}
	update(t, s, func(tx store.Tx) error {
		_, err := tx.PruneEvents(^uint64(0), 0)
		return err
	})
	if v, n := blockState(t, s, r2.DID, r2.CID); v != nil || n != 0 {
		t.Errorf("second value after prune: present %v refs %d, want reclaimed", v != nil, n)
	}
	if c := counts(t, s); c.Blocks != 0 || c.BlockBytes != 0 || c.Events != 0 || c.Records != 0 {
		t.Errorf("Counts after everything is gone: %+v, want zeros", c)
	}

	// An event whose block is absent stores ev.Record as the block.
	v := value("event only")
	update(t, s, func(tx store.Tx) error {
		return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Collection: r.Collection, RKey: "3k9",
			Action: store.ActionCreate, CID: cidOf(v), Record: v})
	})
	if got, n := blockState(t, s, r.DID, cidOf(v)); n != 1 || string(got) != string(v) {
		t.Errorf("block of an event-only value: %q refs %d, want %q 1", got, n, v)
	}
}
