package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// populate writes a little of everything and returns the DIDs, collections
// and meta keys it used.
func populate(t *testing.T, s store.Store) (dids, colls, metaKeys []string) {
	t.Helper()
	dids = []string{"did:plc:p1", "did:plc:p2"}
	colls = []string{"app.bsky.feed.post", "app.bsky.feed.like"}
	metaKeys = []string{"cursor", "filter", "new"}
	update(t, s, func(tx store.Tx) error {
		for i, did := range dids {
			if err := tx.PutRepo(&store.Repo{DID: did, State: store.StateSynced, Rev: "3k"}); err != nil {
				return err
			}
			for j, coll := range colls {
				r := newRecord(did, coll, fmt.Sprintf("3k%d", j), fmt.Sprint(i, j%2))
				if err := tx.PutRecord(r); err != nil {
					return err
				}
				if err := tx.AppendEvent(recordEvent(r)); err != nil {
					return err
				}
			}
			if err := tx.Enqueue(did, time.Unix(int64(100*i), 0)); err != nil {
				return err
			}
			if err := tx.PutBuffer(&store.BufferedCommit{DID: did, Rev: "3k9", Seq: 5, Source: "relay", Data: []byte("frame")}); err != nil {
				return err
			}
		}
		if err := tx.PutMeta("cursor", []byte("42")); err != nil {
			return err
		}
		return tx.PutMeta("filter", []byte("{}"))
	})
	return dids, colls, metaKeys
}

func testFailedUpdateLeavesNothing(t *testing.T, s store.Store) {
	dids, colls, metaKeys := populate(t, s)
	before := dump(t, s, dids, colls, metaKeys)
	errBoom := errors.New("boom")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		// Every kind of write, then failure.
		steps := []func() error{
			func() error { return tx.PutRepo(&store.Repo{DID: "did:plc:p1", State: store.StateError}) },
			func() error { return tx.PutRepo(&store.Repo{DID: "did:plc:p3", State: store.StatePending}) },
			func() error { return tx.DeleteRepo("did:plc:p2") },
			func() error { return tx.PutRecord(newRecord("did:plc:p1", colls[0], "3k0", "changed")) },
			func() error { return tx.PutRecord(newRecord("did:plc:p1", colls[0], "3knew", "new")) },
			func() error { return tx.DeleteRecord("did:plc:p2", colls[1], "3k1") },
			func() error { return tx.AppendEvent(recordEvent(newRecord("did:plc:p1", colls[0], "3knew", "new"))) },
			func() error { _, err := tx.PruneEvents(2, 0); return err },
			func() error { return tx.Enqueue("did:plc:p3", time.Unix(1, 0)) },
			func() error { return tx.Dequeue("did:plc:p1") },
			func() error {
				return tx.PutBuffer(&store.BufferedCommit{DID: "did:plc:p1", Rev: "3ka", Data: []byte("x")})
			},
			func() error { return tx.DeleteBuffer("did:plc:p1", "") },
			func() error { return tx.PutMeta("new", []byte("v")) },
			func() error { return tx.PutMeta("cursor", []byte("43")) },
			func() error { return tx.DeleteMeta("filter") },
		}
		for i, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("step %d: %w", i, err)
			}
		}
		return errBoom
	})
	if err != errBoom {
		t.Fatalf("Update returned %v, want the error of fn as is", err)
	}
	if after := dump(t, s, dids, colls, metaKeys); after != before {
		t.Errorf("a failed Update changed the store:\nbefore\n%s\nafter\n%s", before, after)
	}
	// The next event takes the next id: none was consumed.
	var ev store.Event
	update(t, s, func(tx store.Tx) error {
		ev = store.Event{Kind: store.KindIdentity, DID: "did:plc:p1", Time: time.Unix(5, 0)}
		return tx.AppendEvent(&ev)
	})
	if want := uint64(len(dids) * len(colls)); ev.ID != want+1 {
		t.Errorf("event id after a failed Update = %d, want %d", ev.ID, want+1)
	}
}

func testErrorsPassThrough(t *testing.T, s store.Store) {
	errView := errors.New("view failed")
	errUpdate := errors.New("update failed")
	if err := s.View(t.Context(), func(store.ReadTx) error { return errView }); err != errView {
		t.Errorf("View returned %v, want the error of fn as is", err)
	}
	if err := s.Update(t.Context(), func(store.Tx) error { return errUpdate }); err != errUpdate {
		t.Errorf("Update returned %v, want the error of fn as is", err)
	}
}

func testReadOnlyTx(t *testing.T, s store.Store) {
	view(t, s, func(rtx store.ReadTx) error {
		tx, ok := rtx.(store.Tx)
		if !ok {
			return nil // not detectable: nothing to check
		}
		if err := tx.PutMeta("k", []byte("v")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("PutMeta in a View: error = %v, want ErrReadOnly", err)
		}
		if err := tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:a"}); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("AppendEvent in a View: error = %v, want ErrReadOnly", err)
		}
		if err := tx.PutRecord(newRecord("did:plc:a", "a.b", "c", "v")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("PutRecord in a View: error = %v, want ErrReadOnly", err)
		}
		return nil
	})
	if _, err := getMeta(t, s, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("meta written through a View is visible (err %v)", err)
	}
}

// getMeta reads a meta value.
func getMeta(t *testing.T, s store.Store, key string) ([]byte, error) {
	t.Helper()
	var v []byte
	err := s.View(t.Context(), func(tx store.ReadTx) (err error) {
		v, err = tx.Meta(key)
		return err
	})
	return v, err
}

func testSnapshotIsolation(t *testing.T, s store.Store) {
	populate(t, s)
	started := make(chan struct{})
	committed := make(chan error, 1)
	var sawBefore, sawAfter string
	var wg sync.WaitGroup
	wg.Go(func() {
		err := s.View(t.Context(), func(tx store.ReadTx) error {
			read := func() string {
				v, err := tx.Meta("cursor")
				c, cerr := tx.Counts()
				_, newest, berr := tx.EventBounds()
				r, rerr := tx.Record("did:plc:p1", "app.bsky.feed.post", "3k0")
				val := ""
				if rerr == nil {
					val = string(r.Value)
				}
				return fmt.Sprintf("%s %v %d %v %d %v %q %v", v, err, c.Events, cerr, newest, berr, val, rerr)
			}
			sawBefore = read()
			close(started)
			// Wait for the writer to commit. An implementation may hold
			// its commit until older readers end; then stop waiting.
			select {
			case <-committed:
			case <-time.After(2 * time.Second):
			}
			sawAfter = read()
			return nil
		})
		if err != nil {
			t.Errorf("View: %v", err)
		}
	})
	<-started
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.PutMeta("cursor", []byte("99")); err != nil {
			return err
		}
		if err := tx.PutRecord(newRecord("did:plc:p1", "app.bsky.feed.post", "3k0", "overwritten")); err != nil {
			return err
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:p1", Time: time.Unix(1, 0)})
	})
	committed <- err
	wg.Wait()
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if sawAfter != sawBefore {
		t.Errorf("a View saw a commit made after it started:\nbefore %s\nafter  %s", sawBefore, sawAfter)
	}
	if v, err := getMeta(t, s, "cursor"); err != nil || string(v) != "99" {
		t.Errorf("a View started after the commit reads cursor %q (%v), want 99", v, err)
	}
}

func testConcurrentReaders(t *testing.T, s store.Store) {
	const perTx, txs, readers = 7, 40, 4
	const did, coll = "did:plc:conc", "app.bsky.feed.post"
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads [readers]int
	for i := range readers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				err := s.View(t.Context(), func(tx store.ReadTx) error {
					// Invariant: every committed transaction wrote perTx
					// events, perTx records and advanced "progress" by one.
					n := uint64(0)
					if v, err := tx.Meta("progress"); err == nil {
						n, _ = strconv.ParseUint(string(v), 10, 64)
					} else if !errors.Is(err, store.ErrNotFound) {
						return err
					}
					_, newest, err := tx.EventBounds()
					if err != nil {
						return err
					}
					var scanned uint64
					if err := tx.ScanEvents(0, func(*store.Event) (bool, error) { scanned++; return true, nil }); err != nil {
						return err
					}
					records, err := tx.CountRecords(did, coll)
					if err != nil {
						return err
					}
					c, err := tx.Counts()
					if err != nil {
						return err
					}
					if newest != perTx*n || scanned != perTx*n || records != int64(perTx*n) || c.Events != int64(perTx*n) || c.Records != int64(perTx*n) {
						return fmt.Errorf("torn read: progress %d, newest event %d, scanned %d, records %d, counts %+v",
							n, newest, scanned, records, c)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				reads[i]++
			}
		})
	}
	for i := range txs {
		update(t, s, func(tx store.Tx) error {
			for j := range perTx {
				r := newRecord(did, coll, fmt.Sprintf("3k%03d%d", i, j), fmt.Sprint(i, j))
				if err := tx.PutRecord(r); err != nil {
					return err
				}
				if err := tx.AppendEvent(recordEvent(r)); err != nil {
					return err
				}
			}
			return tx.PutMeta("progress", []byte(strconv.Itoa(i+1)))
		})
	}
	close(done)
	wg.Wait()
	for i, n := range reads {
		if n == 0 {
			t.Errorf("reader %d never completed a View", i)
		}
	}
}

func testValuesOutliveTransaction(t *testing.T, s store.Store) {
	r := newRecord("did:plc:v", "app.bsky.feed.post", "3k1", "keep me")
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		if err := tx.AppendEvent(recordEvent(r)); err != nil {
			return err
		}
		if err := tx.PutBuffer(&store.BufferedCommit{DID: r.DID, Rev: "3k1", Data: []byte("buffered frame")}); err != nil {
			return err
		}
		return tx.PutMeta("m", []byte("meta value"))
	})
	var got [][]byte
	var inUpdate []byte
	view(t, s, func(tx store.ReadTx) error {
		rec, err := tx.Record(r.DID, r.Collection, r.RKey)
		if err != nil {
			return err
		}
		blk, err := tx.Block(r.DID, r.CID)
		if err != nil {
			return err
		}
		ev, err := tx.Event(1)
		if err != nil {
			return err
		}
		m, err := tx.Meta("m")
		if err != nil {
			return err
		}
		var data []byte
		if err := tx.ScanBuffer(r.DID, func(c *store.BufferedCommit) (bool, error) { data = c.Data; return true, nil }); err != nil {
			return err
		}
		got = [][]byte{rec.Value, rec.CID, blk, ev.Record, ev.CID, m, data}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		m, err := tx.Meta("m")
		inUpdate = m
		return err
	})
	// Overwrite and free everything, and write enough to reuse the space.
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRecord(r.DID, r.Collection, r.RKey); err != nil {
			return err
		}
		if _, err := tx.PruneEvents(1, 0); err != nil {
			return err
		}
		if err := tx.DeleteBuffer(r.DID, ""); err != nil {
			return err
		}
		if err := tx.PutMeta("m", bytes.Repeat([]byte("x"), 10)); err != nil {
			return err
		}
		return nil
	})
	// Several transactions, so that pages freed by one are reused by the next.
	for round := range 5 {
		update(t, s, func(tx store.Tx) error {
			for i := range 200 {
				filler := fmt.Sprintf("filler %d %d %s", round, i, bytes.Repeat([]byte("z"), 100))
				if err := tx.PutRecord(newRecord(r.DID, r.Collection, fmt.Sprintf("f%04d", i), filler)); err != nil {
					return err
				}
				if err := tx.PutMeta(fmt.Sprintf("m%04d", i), []byte(filler)); err != nil {
					return err
				}
				if err := tx.PutBuffer(&store.BufferedCommit{DID: r.DID, Rev: fmt.Sprintf("3k%04d", i), Data: []byte(filler)}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	want := [][]byte{r.Value, r.CID, r.Value, r.Value, r.CID, []byte("meta value"), []byte("buffered frame")}
	for i := range want {
		equalBytes(t, fmt.Sprintf("value %d read in an ended View", i), got[i], want[i])
	}
	equalBytes(t, "meta read in an ended Update", inUpdate, []byte("meta value"))
}

func testScansStopAndFail(t *testing.T, s store.Store) {
	populate(t, s)
	update(t, s, func(tx store.Tx) error {
		return tx.PutBuffer(&store.BufferedCommit{DID: "did:plc:p1", Rev: "3kz", Data: []byte("y")})
	})
	scans := []struct {
		name string
		scan func(tx store.ReadTx, visit func() (bool, error)) error
	}{
		{"ScanRepos", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanRepos("", func(*store.Repo) (bool, error) { return visit() })
		}},
		{"ScanRecords", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanRecords(store.RecordScan{DID: "did:plc:p1"}, func(*store.Record) (bool, error) { return visit() })
		}},
		{"ScanRecordsReverse", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanRecords(store.RecordScan{DID: "did:plc:p1", Reverse: true}, func(*store.Record) (bool, error) { return visit() })
		}},
		{"ScanCollection", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanCollection("app.bsky.feed.post", 0, func(*store.Record) (bool, error) { return visit() })
		}},
		{"ScanEvents", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanEvents(0, func(*store.Event) (bool, error) { return visit() })
		}},
		{"ScanQueue", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanQueue(func(string, time.Time) (bool, error) { return visit() })
		}},
		{"ScanBuffer", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanBuffer("did:plc:p1", func(*store.BufferedCommit) (bool, error) { return visit() })
		}},
	}
	errStop := errors.New("stop")
	for _, sc := range scans {
		view(t, s, func(tx store.ReadTx) error {
			all := 0
			if err := sc.scan(tx, func() (bool, error) { all++; return true, nil }); err != nil {
				return err
			}
			if all < 2 {
				t.Errorf("%s visited %d items; the fixture has at least 2", sc.name, all)
			}
			n := 0
			if err := sc.scan(tx, func() (bool, error) { n++; return false, nil }); err != nil || n != 1 {
				t.Errorf("%s with fn returning false: %d visits, err %v; want 1, nil", sc.name, n, err)
			}
			n = 0
			if err := sc.scan(tx, func() (bool, error) { n++; return true, errStop }); !errors.Is(err, errStop) || n != 1 {
				t.Errorf("%s with fn failing: %d visits, err %v; want 1, the error of fn", sc.name, n, err)
			}
			return nil
		})
	}
}
