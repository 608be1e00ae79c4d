package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/store"
)

func testRecordRoundTrip(t *testing.T, s store.Store) {
	r := newRecord("did:plc:alice", "app.bsky.feed.post", "3kabc", "hello")
	update(t, s, func(tx store.Tx) error { return tx.PutRecord(r) })
	if r.Seq == 0 {
		t.Fatalf("PutRecord left Seq 0")
	}
	got := getRecord(t, s, r.DID, r.Collection, r.RKey)
	if got == nil {
		t.Fatalf("Record after PutRecord: not found")
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("Record = %+v, want %+v", got, r)
	}
	for _, k := range [][3]string{
		{"did:plc:bob", r.Collection, r.RKey},
		{r.DID, "app.bsky.feed.like", r.RKey},
		{r.DID, r.Collection, "3kabd"},
		{r.DID, "app.bsky.feed", "post/3kabc"},
	} {
		view(t, s, func(tx store.ReadTx) error {
			if _, err := tx.Record(k[0], k[1], k[2]); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Record(%v) error = %v, want ErrNotFound", k, err)
			}
			return nil
		})
	}

	// Replacing changes value, CID and rev, and moves the record to a new,
	// higher position.
	r2 := newRecord(r.DID, r.Collection, r.RKey, "hello again")
	r2.Rev = "3kzzz"
	update(t, s, func(tx store.Tx) error { return tx.PutRecord(r2) })
	if r2.Seq <= r.Seq {
		t.Errorf("Seq after replace = %d, want > %d", r2.Seq, r.Seq)
	}
	if got := getRecord(t, s, r.DID, r.Collection, r.RKey); !reflect.DeepEqual(got, r2) {
		t.Errorf("replaced Record = %+v, want %+v", got, r2)
	}
	if c := counts(t, s); c.Records != 1 {
		t.Errorf("Counts().Records = %d after replace, want 1", c.Records)
	}

	// Deleting, twice: the second is not an error.
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRecord(r.DID, r.Collection, r.RKey); err != nil {
			return err
		}
		return tx.DeleteRecord(r.DID, r.Collection, r.RKey)
	})
	if got := getRecord(t, s, r.DID, r.Collection, r.RKey); got != nil {
		t.Errorf("Record after delete = %+v, want not found", got)
	}
	if c := counts(t, s); c.Records != 0 {
		t.Errorf("Counts().Records = %d after delete, want 0", c.Records)
	}
}

// orderFixture is a set of records whose repo-path order differs from the
// order of (collection, rkey) pairs: '.' sorts before '/', so "a.b.c/x"
// comes before "a.b/x".
var orderFixture = []struct{ coll, rkey string }{
	{"a.b", "x"}, {"a.b.c", "x"}, {"a.b", "3k2"}, {"a.bc", "a"}, {"a.b-c", "z"},
	{"a.b.c", "a"}, {"a.b", "self"}, {"a.a", "zz"}, {"a.b", "3k10"}, {"a.b", "3k1"},
	{"b.a", "1"}, {"a.b.c.d", "m"},
}

// putOrderFixture stores orderFixture for did and returns the paths in MST
// order.
func putOrderFixture(t *testing.T, s store.Store, did string) []string {
	t.Helper()
	var paths []string
	update(t, s, func(tx store.Tx) error {
		for _, f := range orderFixture {
			if err := tx.PutRecord(newRecord(did, f.coll, f.rkey, did+f.coll+f.rkey)); err != nil {
				return err
			}
			paths = append(paths, f.coll+"/"+f.rkey)
		}
		return nil
	})
	sort.Strings(paths) // byte order of the repo path is the MST order
	return paths
}

func testRecordOrder(t *testing.T, s store.Store) {
	// "did:plc:a" is a prefix of "did:plc:ab": their records must not mix.
	want := putOrderFixture(t, s, "did:plc:a")
	putOrderFixture(t, s, "did:plc:ab")
	update(t, s, func(tx store.Tx) error {
		return tx.PutRecord(newRecord("did:plc:", "a.b", "x", "short did"))
	})
	var got []string
	view(t, s, func(tx store.ReadTx) error {
		return tx.ScanRecords(store.RecordScan{DID: "did:plc:a"}, func(r *store.Record) (bool, error) {
			if r.DID != "did:plc:a" {
				t.Errorf("ScanRecords(did:plc:a) visited a record of %s", r.DID)
			}
			got = append(got, r.Collection+"/"+r.RKey)
			return true, nil
		})
	})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ScanRecords order =\n%v\nwant\n%v", got, want)
	}
	if i, j := slices.Index(got, "a.b.c/x"), slices.Index(got, "a.b/x"); i < 0 || j < 0 || i > j {
		t.Errorf(`"a.b.c/x" at %d, "a.b/x" at %d: want a.b.c/x first (MST order)`, i, j)
	}
}

func testScanRecordsCursors(t *testing.T, s store.Store) {
	const did = "did:plc:scan"
	all := putOrderFixture(t, s, did)
	putOrderFixture(t, s, "did:plc:scan2")
	// expected computes the answer from the sorted list.
	expected := func(coll, after string, reverse bool) []string {
		var out []string
		for _, p := range all {
			c, rkey, _ := strings.Cut(p, "/")
			key := p
			if coll != "" {
				if c != coll {
					continue
				}
				key = rkey
			}
			if after != "" && (!reverse && key <= after || reverse && key >= after) {
				continue
			}
			out = append(out, p)
		}
		if reverse {
			slices.Reverse(out)
		}
		return out
	}
	scan := func(q store.RecordScan, limit int) []string {
		var out []string
		view(t, s, func(tx store.ReadTx) error {
			return tx.ScanRecords(q, func(r *store.Record) (bool, error) {
				if q.WithValues != (r.Value != nil) {
					t.Errorf("%+v: Value loaded = %v", q, r.Value != nil)
				}
				if q.WithValues && string(r.Value) != string(value(did+r.Collection+r.RKey)) {
					t.Errorf("%+v: value of %s/%s = %q", q, r.Collection, r.RKey, r.Value)
				}
				out = append(out, r.Collection+"/"+r.RKey)
				return limit <= 0 || len(out) < limit, nil
			})
		})
		return out
	}
	tests := []struct {
		coll, after string
	}{
		{"", ""}, {"", "a.b/x"}, {"", "a.b.c/x"}, {"", "a.b/3k10"}, {"", "a.b/"}, {"", "a.b0"},
		{"", "0"}, {"", "zzz"}, {"", "a.b.c/a"},
		{"a.b", ""}, {"a.b", "3k1"}, {"a.b", "3k15"}, {"a.b", "x"}, {"a.b", "self"}, {"a.b", "0"},
		{"a.b.c", ""}, {"a.b.c", "a"}, {"a.b.c", "x"},
		{"a", ""}, {"a.b.c.d.e", ""}, {"b.a", ""},
	}
	for _, tc := range tests {
		for _, reverse := range []bool{false, true} {
			q := store.RecordScan{DID: did, Collection: tc.coll, After: tc.after, Reverse: reverse, WithValues: reverse}
			if got, want := scan(q, 0), expected(tc.coll, tc.after, reverse); !reflect.DeepEqual(got, want) {
				t.Errorf("ScanRecords(coll %q after %q reverse %v) =\n%v\nwant\n%v", tc.coll, tc.after, reverse, got, want)
			}
		}
	}

	// Paging with the last key as cursor visits everything once.
	for _, coll := range []string{"", "a.b"} {
		for _, reverse := range []bool{false, true} {
			var got []string
			after := ""
			for page := 0; page < 20; page++ {
				items := scan(store.RecordScan{DID: did, Collection: coll, After: after, Reverse: reverse}, 3)
				if len(items) == 0 {
					break
				}
				got = append(got, items...)
				after = items[len(items)-1]
				if coll != "" {
					_, after, _ = strings.Cut(after, "/")
				}
			}
			if want := expected(coll, "", reverse); !reflect.DeepEqual(got, want) {
				t.Errorf("paged ScanRecords(coll %q reverse %v) =\n%v\nwant\n%v", coll, reverse, got, want)
			}
		}
	}
	if got := scan(store.RecordScan{DID: "did:plc:nobody"}, 0); len(got) != 0 {
		t.Errorf("ScanRecords of an absent repo = %v", got)
	}
}

func testScanCollection(t *testing.T, s store.Store) {
	const coll = "app.x.post"
	dids := []string{"did:plc:a", "did:plc:b", "did:plc:c"}
	// written holds "did/rkey" in write order.
	var written []string
	update(t, s, func(tx store.Tx) error {
		for i := range 12 {
			did := dids[i%3]
			rkey := fmt.Sprintf("3k%02d", 12-i)
			if err := tx.PutRecord(newRecord(did, coll, rkey, fmt.Sprint(i))); err != nil {
				return err
			}
			written = append(written, did+"/"+rkey)
			// Noise in collections that share a prefix with coll.
			if err := tx.PutRecord(newRecord(did, coll+"x", rkey, "noise")); err != nil {
				return err
			}
			if err := tx.PutRecord(newRecord(did, "app.x", "post"+rkey, "noise")); err != nil {
				return err
			}
		}
		return nil
	})
	// Rewrite the oldest, delete the second oldest, in a later transaction.
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(newRecord("did:plc:a", coll, "3k12", "rewritten")); err != nil {
			return err
		}
		return tx.DeleteRecord("did:plc:b", coll, "3k11")
	})
	want := append(slices.Clone(written[2:]), written[0])
	slices.Reverse(want)

	type item struct {
		key string
		seq uint64
	}
	scan := func(after uint64, limit int) []item {
		var out []item
		view(t, s, func(tx store.ReadTx) error {
			return tx.ScanCollection(coll, after, func(r *store.Record) (bool, error) {
				if r.Collection != coll {
					t.Errorf("ScanCollection(%s) visited %s", coll, r.Collection)
				}
				if r.Value == nil || !equalCID(r) {
					t.Errorf("ScanCollection: record %s/%s without its value", r.DID, r.RKey)
				}
				out = append(out, item{r.DID + "/" + r.RKey, r.Seq})
				return limit <= 0 || len(out) < limit, nil
			})
		})
		return out
	}
	full := scan(0, 0)
	var keys []string
	for i, it := range full {
		keys = append(keys, it.key)
		if i > 0 && it.seq >= full[i-1].seq {
			t.Errorf("ScanCollection seq %d after %d: want descending", it.seq, full[i-1].seq)
		}
	}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("ScanCollection =\n%v\nwant\n%v", keys, want)
	}
	// Paging by Seq.
	var paged []string
	var after uint64
	for page := 0; page < 20; page++ {
		items := scan(after, 4)
		if len(items) == 0 {
			break
		}
		for _, it := range items {
			paged = append(paged, it.key)
		}
		after = items[len(items)-1].seq
	}
	if !reflect.DeepEqual(paged, want) {
		t.Errorf("paged ScanCollection =\n%v\nwant\n%v", paged, want)
	}
	// Scanning starts strictly after the cursor.
	if len(full) > 3 {
		got := scan(full[2].seq, 1)
		if len(got) != 1 || got[0].key != full[3].key {
			t.Errorf("ScanCollection(after %d) = %v, want %s", full[2].seq, got, full[3].key)
		}
	}
	var none int
	view(t, s, func(tx store.ReadTx) error {
		return tx.ScanCollection("app.none", 0, func(*store.Record) (bool, error) { none++; return true, nil })
	})
	if none != 0 {
		t.Errorf("ScanCollection of an empty collection visited %d", none)
	}
}

// equalCID reports whether r.Value hashes to r.CID, as the suite's values do.
func equalCID(r *store.Record) bool {
	return string(cidOf(r.Value)) == string(r.CID)
}

func testCountRecordsAndCollections(t *testing.T, s store.Store) {
	const did = "did:plc:count"
	putOrderFixture(t, s, did)
	putOrderFixture(t, s, did+"x")
	perColl := map[string]int64{}
	var colls []string
	for _, f := range orderFixture {
		if perColl[f.coll] == 0 {
			colls = append(colls, f.coll)
		}
		perColl[f.coll]++
	}
	sort.Strings(colls)
	check := func(step string) {
		t.Helper()
		view(t, s, func(tx store.ReadTx) error {
			got, err := tx.Collections(did)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got, colls) && !(len(got) == 0 && len(colls) == 0) {
				t.Errorf("%s: Collections = %v, want %v", step, got, colls)
			}
			var total int64
			for _, c := range append(slices.Clone(colls), "a", "a.b.c.d.e", "none.x") {
				n, err := tx.CountRecords(did, c)
				if err != nil {
					return err
				}
				if n != perColl[c] {
					t.Errorf("%s: CountRecords(%s) = %d, want %d", step, c, n, perColl[c])
				}
				total += n
			}
			n, err := tx.CountRecords(did, "")
			if err != nil {
				return err
			}
			if n != total {
				t.Errorf("%s: CountRecords(all) = %d, want %d", step, n, total)
			}
			return nil
		})
	}
	check("initial")
	// Replacing does not count twice; deleting every record of a.b.c drops
	// the collection.
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(newRecord(did, "a.b", "x", "again")); err != nil {
			return err
		}
		for _, f := range orderFixture {
			if f.coll == "a.b.c" {
				if err := tx.DeleteRecord(did, f.coll, f.rkey); err != nil {
					return err
				}
			}
		}
		return nil
	})
	delete(perColl, "a.b.c")
	colls = slices.DeleteFunc(colls, func(c string) bool { return c == "a.b.c" })
	check("after delete")
	if c := counts(t, s); c.Records != int64(2*len(orderFixture)-2) {
		t.Errorf("Counts().Records = %d, want %d", c.Records, 2*len(orderFixture)-2)
	}
}

// testInvalidRecordRefused: PutRecord refuses a record that Validate
// refuses, and the Update that tried it writes nothing.
func testInvalidRecordRefused(t *testing.T, s store.Store) {
	good := newRecord("did:plc:alice", "app.bsky.feed.post", "3kabc", "hello")
	for name, mutate := range map[string]func(r *store.Record){
		"empty DID":        func(r *store.Record) { r.DID = "" },
		"empty collection": func(r *store.Record) { r.Collection = "" },
		"slash collection": func(r *store.Record) { r.Collection = "app.bsky/feed" },
		"empty rkey":       func(r *store.Record) { r.RKey = "" },
		"empty CID":        func(r *store.Record) { r.CID = nil },
	} {
		r := *good
		mutate(&r)
		if r.Validate() == nil {
			t.Fatalf("%s: Validate accepted %+v", name, r)
		}
		err := s.Update(t.Context(), func(tx store.Tx) error { return tx.PutRecord(&r) })
		if err == nil {
			t.Errorf("%s: PutRecord accepted %+v", name, r)
		}
	}
	view(t, s, func(tx store.ReadTx) error {
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		if c.Records != 0 || c.Blocks != 0 {
			t.Errorf("after refused records: %d records, %d blocks; want none", c.Records, c.Blocks)
		}
		return nil
	})
}

// testScanCollectionAfterBackfill writes the way a backfill does (a new
// repo's records in key order in one transaction, several collections, two
// repos one after the other), then changes records at the edges and in the
// middle of what was written, and checks ScanCollection and its paging
// against the seqs PutRecord returned.
func testScanCollectionAfterBackfill(t *testing.T, s store.Store) {
	const coll = "app.x.post"
	type rec struct {
		did, rkey string
		seq       uint64
	}
	live := map[string]rec{} // did/rkey → newest write
	put := func(tx store.Tx, did, collection, rkey, text string) error {
		r := newRecord(did, collection, rkey, text)
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		if collection == coll {
			live[did+"/"+rkey] = rec{did, rkey, r.Seq}
		}
		return nil
	}
	// Backfills of two new repos in one transaction, each in key order:
	// app.x.like < app.x.post < app.x.repost.
	update(t, s, func(tx store.Tx) error {
		for _, did := range []string{"did:plc:a", "did:plc:b"} {
			for _, c := range []string{"app.x.like", coll, "app.x.repost"} {
				for i := range 10 {
					if err := put(tx, did, c, fmt.Sprintf("3k%02d", 2*i), "v"); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	// Later: rewrite the first, a middle and the last record of a, delete
	// two of b (the last included), insert between existing keys, rewrite
	// a record of b and delete it again in the same transaction.
	update(t, s, func(tx store.Tx) error {
		for _, rk := range []string{"3k00", "3k08", "3k18"} {
			if err := put(tx, "did:plc:a", coll, rk, "rewritten"); err != nil {
				return err
			}
		}
		for _, rk := range []string{"3k04", "3k18"} {
			if err := tx.DeleteRecord("did:plc:b", coll, rk); err != nil {
				return err
			}
			delete(live, "did:plc:b/"+rk)
		}
		if err := put(tx, "did:plc:a", coll, "3k05", "inserted"); err != nil {
			return err
		}
		if err := put(tx, "did:plc:b", coll, "3k10", "rewritten"); err != nil {
			return err
		}
		delete(live, "did:plc:b/3k10")
		return tx.DeleteRecord("did:plc:b", coll, "3k10")
	})
	// A third repo's backfill, and a delete inside it, in one transaction.
	update(t, s, func(tx store.Tx) error {
		for i := range 5 {
			if err := put(tx, "did:plc:c", coll, fmt.Sprintf("3k%02d", i), "v"); err != nil {
				return err
			}
		}
		delete(live, "did:plc:c/3k02")
		return tx.DeleteRecord("did:plc:c", coll, "3k02")
	})
	var want []string
	for _, r := range slices.SortedFunc(maps.Values(live), func(x, y rec) int { return cmp.Compare(y.seq, x.seq) }) {
		want = append(want, fmt.Sprintf("%s/%s@%d", r.did, r.rkey, r.seq))
	}
	scan := func(after uint64, limit int) []string {
		var out []string
		view(t, s, func(tx store.ReadTx) error {
			return tx.ScanCollection(coll, after, func(r *store.Record) (bool, error) {
				if r.Collection != coll || r.Value == nil || !equalCID(r) {
					t.Errorf("ScanCollection visited %s/%s/%s (value %q)", r.DID, r.Collection, r.RKey, r.Value)
				}
				out = append(out, fmt.Sprintf("%s/%s@%d", r.DID, r.RKey, r.Seq))
				return limit <= 0 || len(out) < limit, nil
			})
		})
		return out
	}
	if got := scan(0, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("ScanCollection =\n%v\nwant\n%v", got, want)
	}
	for _, size := range []int{1, 3, 7} {
		var paged []string
		var after uint64
		for range len(want) + 1 {
			items := scan(after, size)
			if len(items) == 0 {
				break
			}
			paged = append(paged, items...)
			last := items[len(items)-1]
			seq, err := strconv.ParseUint(last[strings.LastIndexByte(last, '@')+1:], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			after = seq
		}
		if !reflect.DeepEqual(paged, want) {
			t.Errorf("ScanCollection in pages of %d =\n%v\nwant\n%v", size, paged, want)
		}
	}
	// Every position, not only the seqs of live records, is a cursor.
	for after := uint64(1); after <= live["did:plc:c/3k04"].seq+1; after++ {
		var w []string
		for _, it := range want {
			seq, _ := strconv.ParseUint(it[strings.LastIndexByte(it, '@')+1:], 10, 64)
			if seq < after {
				w = append(w, it)
			}
		}
		if got := scan(after, 0); !reflect.DeepEqual(got, w) {
			t.Errorf("ScanCollection(after %d) =\n%v\nwant\n%v", after, got, w)
		}
	}
}
