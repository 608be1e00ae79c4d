package boltstore_test

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

func openBench(b *testing.B, noSync bool) *boltstore.DB {
	b.Helper()
	db, err := boltstore.Open(filepath.Join(b.TempDir(), "bench.db"), &boltstore.Options{NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// benchDID returns the DID of repo i: did:plc and 24 characters, as real
// ones, in no particular order.
func benchDID(i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "repo %d", i))
	return fmt.Sprintf("did:plc:%x", sum[:12])
}

// benchRecord returns record n of a repo, with a ~300-byte value and its
// CID (a hash: CIDs come in no order).
func benchRecord(did string, n int) *store.Record {
	v := fmt.Appendf(nil, "%0300d", n)
	sum := sha256.Sum256(v)
	cid := append([]byte{1, 0x71, 0x12, 0x20}, sum[:]...)
	return &store.Record{DID: did, Collection: "app.bsky.feed.post", RKey: fmt.Sprintf("3k%010d", n), CID: cid, Rev: "3kabc", Value: v}
}

// cpuTime returns the CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkUpdate_1000Records measures group commit as a backfill does it:
// each transaction writes the 1000 records of a new repo in key order, each
// with its create event, at strictly increasing times (as the writer
// stamps them).
// cpu-µs/record is the process's CPU time per record, which does not
// depend on other load on the machine.
func BenchmarkUpdate_1000Records(b *testing.B) {
	for _, sync := range []bool{true, false} {
		name := "fsync"
		if !sync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			db := openBench(b, !sync)
			n := 0
			var ev int64
			var cpu time.Duration
			recs := make([]*store.Record, 1000)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for i := range recs {
					recs[i] = benchRecord(benchDID(n/1000), n)
					n++
				}
				start := cpuTime(b)
				b.StartTimer()
				err := db.Update(b.Context(), func(tx store.Tx) error {
					for _, r := range recs {
						if err := tx.PutRecord(r); err != nil {
							return err
						}
						ev++
						if err := tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Rev: r.Rev, Time: time.Unix(1, ev*1000),
							Collection: r.Collection, RKey: r.RKey, Action: store.ActionCreate, CID: r.CID, Record: r.Value}); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime(b) - start
			}
			b.StopTimer()
			b.ReportMetric(float64(1000*b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(1000*b.N), "cpu-µs/record")
			b.ReportMetric(float64(db.Size())/float64(1000*b.N), "B/record")
		})
	}
}

// BenchmarkUpdate_1Record is the same write without grouping: one record
// and its event per transaction.
func BenchmarkUpdate_1Record(b *testing.B) {
	db := openBench(b, false)
	b.ResetTimer()
	for i := range b.N {
		err := db.Update(b.Context(), func(tx store.Tx) error {
			r := benchRecord("did:plc:bench", i)
			if err := tx.PutRecord(r); err != nil {
				return err
			}
			return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Rev: r.Rev, Time: time.Unix(1, 0),
				Collection: r.Collection, RKey: r.RKey, Action: store.ActionCreate, CID: r.CID, Record: r.Value})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkScanEvents reads a 100,000-event log with its record values.
func BenchmarkScanEvents(b *testing.B) {
	const events = 100_000
	db := openBench(b, true)
	for start := 0; start < events; start += 10_000 {
		err := db.Update(b.Context(), func(tx store.Tx) error {
			for n := start; n < start+10_000; n++ {
				r := benchRecord("did:plc:scan", n)
				if err := tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Rev: r.Rev, Time: time.Unix(1, 0),
					Collection: r.Collection, RKey: r.RKey, Action: store.ActionCreate, CID: r.CID, Record: r.Value}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		seen := 0
		err := db.View(b.Context(), func(tx store.ReadTx) error {
			return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
				seen++
				return true, nil
			})
		})
		if err != nil || seen != events {
			b.Fatalf("scanned %d, err %v", seen, err)
		}
	}
	b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkScanRecords pages through one repo's 100,000 records, 100 at a
// time, as listRecords does.
func BenchmarkScanRecords(b *testing.B) {
	const records = 100_000
	db := openBench(b, true)
	for start := 0; start < records; start += 10_000 {
		err := db.Update(b.Context(), func(tx store.Tx) error {
			for n := start; n < start+10_000; n++ {
				if err := tx.PutRecord(benchRecord("did:plc:scan", n)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		seen, after := 0, ""
		for {
			page := 0
			err := db.View(b.Context(), func(tx store.ReadTx) error {
				return tx.ScanRecords(store.RecordScan{DID: "did:plc:scan", Collection: "app.bsky.feed.post", After: after, WithValues: true},
					func(r *store.Record) (bool, error) {
						page++
						after = r.RKey
						return page < 100, nil
					})
			})
			if err != nil {
				b.Fatal(err)
			}
			seen += page
			if page < 100 {
				break
			}
		}
		if seen != records {
			b.Fatalf("scanned %d", seen)
		}
	}
	b.ReportMetric(float64(records*b.N)/b.Elapsed().Seconds(), "records/s")
}
