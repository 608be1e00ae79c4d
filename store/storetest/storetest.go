// Package storetest is the conformance suite for store.Store
// implementations.
//
// An implementation proves itself by calling Run from one of its tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mystore.Open(filepath.Join(t.TempDir(), "db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite checks the contract written on store.Store, store.ReadTx and
// store.Tx: round trips of every type, key order (records in MST path order,
// repos in DID order), range scans with cursors in both directions, the
// atomicity of failed transactions, snapshot reads beside a writer, event id
// contiguity, the time index (EventAtTime) against its definition, block reference counting and reclamation (blocks are per
// repo: Block and BlockRefs take the DID with the CID), the backfill queue and
// buffer orders, metadata, and counters; and the backlink index (PutLinks,
// ScanBacklinks, CountBacklinks, ScanLinkSources): replacement, order and
// cursors, exact counts of records and distinct DIDs, removal with the
// record, atomicity and snapshots. Those tests skip, saying so, on a store
// whose PutLinks returns an error wrapping errors.ErrUnsupported. Run it
// with -race.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// Run runs every conformance test as a subtest of t. newStore must return a
// new, empty store on each call and arrange for it to be closed when the
// test ends (t.Cleanup); the suite does not close it.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RepoRoundTrip", testRepoRoundTrip},
		{"RepoOrder", testRepoOrder},
		{"RecordRoundTrip", testRecordRoundTrip},
		{"RecordOrder", testRecordOrder},
		{"InvalidRecordRefused", testInvalidRecordRefused},
		{"ScanRecordsCursors", testScanRecordsCursors},
		{"ScanCollection", testScanCollection},
		{"ScanCollectionAfterBackfill", testScanCollectionAfterBackfill},
		{"CountRecordsAndCollections", testCountRecordsAndCollections},
		{"BlockRefcounts", testBlockRefcounts},
		{"BlockReclaimedAfterPrune", testBlockReclaimedAfterPrune},
		{"EventRoundTrip", testEventRoundTrip},
		{"EventScanAndPrune", testEventScanAndPrune},
		{"EventIDsContiguous", testEventIDsContiguous},
		{"EventAtTime", testEventAtTime},
		{"EventAtTimeMatchesScan", testEventAtTimeMatchesScan},
		{"FailedUpdateLeavesNothing", testFailedUpdateLeavesNothing},
		{"ErrorsPassThrough", testErrorsPassThrough},
		{"ReadOnlyTx", testReadOnlyTx},
		{"SnapshotIsolation", testSnapshotIsolation},
		{"ConcurrentReaders", testConcurrentReaders},
		{"QueueOrder", testQueueOrder},
		{"BufferOrder", testBufferOrder},
		{"Meta", testMeta},
		{"CountsByState", testCountsByState},
		{"DeleteRepo", testDeleteRepo},
		{"RepoByHandle", testRepoByHandle},
		{"ValuesOutliveTransaction", testValuesOutliveTransaction},
		{"ScansStopAndFail", testScansStopAndFail},
		{"LinksPutReplaceRemove", backlinks(testLinksPutReplaceRemove)},
		{"BacklinksOrder", backlinks(testBacklinksOrder)},
		{"BacklinksManyPages", backlinks(testBacklinksManyPages)},
		{"BacklinksMove", backlinks(testBacklinksMove)},
		{"DeleteRecordRemovesLinks", backlinks(testDeleteRecordRemovesLinks)},
		{"BacklinkCounts", backlinks(testBacklinkCounts)},
		{"LinkSources", backlinks(testLinkSources)},
		{"LinksFailedUpdate", backlinks(testLinksFailedUpdate)},
		{"LinksSnapshotIsolation", backlinks(testLinksSnapshotIsolation)},
		{"LinkScansStopAndFail", backlinks(testLinkScansStopAndFail)},
		{"LinksInvalidRefused", backlinks(testLinksInvalidRefused)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// update runs fn in an Update and fails the test on error.
func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs fn in a View and fails the test on error.
func view(t *testing.T, s store.Store, fn func(tx store.ReadTx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// cidOf returns a binary CIDv1 (dag-cbor, sha2-256) of value.
func cidOf(value []byte) []byte {
	sum := sha256.Sum256(value)
	return append([]byte{0x01, 0x71, 0x12, 0x20}, sum[:]...)
}

// value returns a distinct record value for s.
func value(s string) []byte {
	// A CBOR map {"text": s}; its shape does not matter to a store.
	return append([]byte{0xa1, 0x64, 't', 'e', 'x', 't', 0x78, byte(len(s))}, s...)
}

// newRecord returns a record with the value of text.
func newRecord(did, collection, rkey, text string) *store.Record {
	v := value(text)
	return &store.Record{DID: did, Collection: collection, RKey: rkey, CID: cidOf(v), Rev: "3l" + rkey, Value: v}
}

// recordEvent returns a create event for r, carrying its value.
func recordEvent(r *store.Record) *store.Event {
	return &store.Event{
		Kind: store.KindRecord, DID: r.DID, Rev: r.Rev, Time: time.Unix(1700000000, 0).UTC(),
		Collection: r.Collection, RKey: r.RKey, Action: store.ActionCreate, CID: r.CID, Record: r.Value,
	}
}

// getRecord reads one record, or nil if absent.
func getRecord(t *testing.T, s store.Store, did, collection, rkey string) *store.Record {
	t.Helper()
	var r *store.Record
	view(t, s, func(tx store.ReadTx) error {
		var err error
		r, err = tx.Record(did, collection, rkey)
		if errors.Is(err, store.ErrNotFound) {
			r, err = nil, nil
		}
		return err
	})
	return r
}

// counts reads the counters.
func counts(t *testing.T, s store.Store) store.Counts {
	t.Helper()
	var c store.Counts
	view(t, s, func(tx store.ReadTx) (err error) {
		c, err = tx.Counts()
		return err
	})
	return c
}

// blockState returns the value (nil if absent) and reference count of a
// repo's block.
func blockState(t *testing.T, s store.Store, did string, cid []byte) ([]byte, uint64) {
	t.Helper()
	var v []byte
	var n uint64
	view(t, s, func(tx store.ReadTx) error {
		var err error
		v, err = tx.Block(did, cid)
		if errors.Is(err, store.ErrNotFound) {
			v, err = nil, nil
		}
		if err != nil {
			return err
		}
		n, err = tx.BlockRefs(did, cid)
		return err
	})
	return v, n
}

// dump renders everything the store holds that the suite can enumerate, so
// two states can be compared. dids are the repos whose records and buffers
// are included; collections those scanned with ScanCollection.
func dump(t *testing.T, s store.Store, dids, collections, metaKeys []string) string {
	t.Helper()
	var b strings.Builder
	view(t, s, func(tx store.ReadTx) error {
		if err := tx.ScanRepos("", func(r *store.Repo) (bool, error) {
			fmt.Fprintf(&b, "repo %s %v %s\n", r.DID, r.State, r.Rev)
			return true, nil
		}); err != nil {
			return err
		}
		cids := map[string]bool{}
		for _, did := range dids {
			if err := tx.ScanRecords(store.RecordScan{DID: did, WithValues: true}, func(r *store.Record) (bool, error) {
				fmt.Fprintf(&b, "record %s %s/%s %x %s %d %x\n", r.DID, r.Collection, r.RKey, r.CID, r.Rev, r.Seq, r.Value)
				cids[r.DID+" "+string(r.CID)] = true
				return true, nil
			}); err != nil {
				return err
			}
			n, err := tx.CountRecords(did, "")
			if err != nil {
				return err
			}
			cs, err := tx.Collections(did)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "count %s %d %v\n", did, n, cs)
			if err := tx.ScanBuffer(did, func(c *store.BufferedCommit) (bool, error) {
				fmt.Fprintf(&b, "buffer %s %s %d %s %x\n", c.DID, c.Rev, c.Seq, c.Source, c.Data)
				return true, nil
			}); err != nil {
				return err
			}
		}
		for _, coll := range collections {
			if err := tx.ScanCollection(coll, 0, func(r *store.Record) (bool, error) {
				fmt.Fprintf(&b, "bycoll %s %s/%s %d\n", coll, r.DID, r.RKey, r.Seq)
				return true, nil
			}); err != nil {
				return err
			}
		}
		if err := tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			fmt.Fprintf(&b, "event %d %v %s %s/%s %x %x\n", ev.ID, ev.Kind, ev.DID, ev.Collection, ev.RKey, ev.CID, ev.Record)
			if len(ev.CID) > 0 {
				cids[ev.DID+" "+string(ev.CID)] = true
			}
			return true, nil
		}); err != nil {
			return err
		}
		oldest, newest, err := tx.EventBounds()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "bounds %d %d\n", oldest, newest)
		keys := make([]string, 0, len(cids))
		for c := range cids {
			keys = append(keys, c)
		}
		sort.Strings(keys)
		for _, c := range keys {
			did, cid, _ := strings.Cut(c, " ")
			n, err := tx.BlockRefs(did, []byte(cid))
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "refs %s %x %d\n", did, cid, n)
		}
		if err := tx.ScanQueue(func(did string, due time.Time) (bool, error) {
			fmt.Fprintf(&b, "queue %s %s\n", did, due.UTC().Format(time.RFC3339Nano))
			return true, nil
		}); err != nil {
			return err
		}
		for _, k := range metaKeys {
			v, err := tx.Meta(k)
			if errors.Is(err, store.ErrNotFound) {
				fmt.Fprintf(&b, "meta %s absent\n", k)
				continue
			} else if err != nil {
				return err
			}
			fmt.Fprintf(&b, "meta %s %q\n", k, v)
		}
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "counts repos=%d records=%d events=%d blocks=%d bytes=%d states=%v\n",
			c.Repos, c.Records, c.Events, c.Blocks, c.BlockBytes, nonZero(c.ReposByState))
		return nil
	})
	return b.String()
}

// nonZero drops zero entries, so that maps compare regardless of whether an
// implementation keeps them.
func nonZero(m map[store.RepoState]int64) map[store.RepoState]int64 {
	out := map[store.RepoState]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// equalBytes reports a mismatch of two byte slices.
func equalBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s = %x, want %x", what, got, want)
	}
}
