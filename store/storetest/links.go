package storetest

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// backlinks wraps a test of the backlink index so that it skips, naming
// the reason, on a store whose PutLinks returns an error wrapping
// errors.ErrUnsupported. The probe writes in an Update that fails, so it
// leaves the store as it was.
func backlinks(fn func(t *testing.T, s store.Store)) func(t *testing.T, s store.Store) {
	return func(t *testing.T, s store.Store) {
		t.Helper()
		errProbe := errors.New("probe rolled back")
		err := s.Update(t.Context(), func(tx store.Tx) error {
			if err := tx.PutLinks("did:plc:probe", "app.probe", "3kprobe", 1, []store.Link{{Target: "did:plc:x", Path: "subject"}}); err != nil {
				return err
			}
			return errProbe
		})
		if errors.Is(err, errors.ErrUnsupported) {
			t.Skipf("the store does not implement the backlink index (PutLinks: %v)", err)
		}
		if err != errProbe {
			t.Fatalf("probing PutLinks: Update returned %v, want the error of fn", err)
		}
		fn(t, s)
	}
}

// Targets and sources of the backlink tests.
const (
	likeColl  = "app.bsky.feed.like"
	postColl  = "app.bsky.feed.post"
	subject   = "subject.uri"
	postURI   = "at://did:plc:bob/app.bsky.feed.post/3kpost"
	otherPost = "at://did:plc:bob/app.bsky.feed.post/3kother"
)

// putLinked stores a record in tx and then its links at the record's
// position, as the indexer does, and returns the position.
func putLinked(tx store.Tx, did, coll, rkey string, links ...store.Link) (uint64, error) {
	r := newRecord(did, coll, rkey, did+coll+rkey)
	if err := tx.PutRecord(r); err != nil {
		return 0, err
	}
	if err := tx.PutLinks(did, coll, rkey, r.Seq, links); err != nil {
		return 0, fmt.Errorf("PutLinks(%s/%s/%s): %w", did, coll, rkey, err)
	}
	return r.Seq, nil
}

// link returns a link to target at path.
func link(target, path string) store.Link { return store.Link{Target: target, Path: path} }

// scanLinks runs ScanBacklinks in its own View, stopping after limit
// visits (0: no limit), and checks that every visit is of q's source.
func scanLinks(t *testing.T, s store.Store, q store.BacklinkScan, limit int) []store.Backlink {
	t.Helper()
	var out []store.Backlink
	view(t, s, func(tx store.ReadTx) error {
		return tx.ScanBacklinks(q, func(b *store.Backlink) (bool, error) {
			if b.Collection != q.Collection || b.Path != q.Path {
				t.Errorf("ScanBacklinks(%+v) visited a link from %s:%s", q, b.Collection, b.Path)
			}
			out = append(out, *b)
			return limit <= 0 || len(out) < limit, nil
		})
	})
	return out
}

// countLinks runs CountBacklinks in its own View.
func countLinks(t *testing.T, s store.Store, target, coll, path string) store.BacklinkCount {
	t.Helper()
	var n store.BacklinkCount
	view(t, s, func(tx store.ReadTx) (err error) {
		n, err = tx.CountBacklinks(target, coll, path)
		return err
	})
	return n
}

// linkState renders the index as the read methods show it for targets:
// every source with its count, every backlink of each, and Counts.Links.
// It checks each count against a recount of the source's backlinks.
func linkState(t *testing.T, tx store.ReadTx, targets ...string) (string, error) {
	t.Helper()
	var b strings.Builder
	for _, target := range targets {
		type source struct {
			coll, path string
			n          store.BacklinkCount
		}
		var sources []source
		if err := tx.ScanLinkSources(target, func(coll, path string, n store.BacklinkCount) (bool, error) {
			sources = append(sources, source{coll, path, n})
			return true, nil
		}); err != nil {
			return "", err
		}
		for _, src := range sources {
			fmt.Fprintf(&b, "source %s %s:%s records=%d dids=%d\n", target, src.coll, src.path, src.n.Records, src.n.DIDs)
			dids := map[string]bool{}
			var records int64
			if err := tx.ScanBacklinks(store.BacklinkScan{Target: target, Collection: src.coll, Path: src.path}, func(l *store.Backlink) (bool, error) {
				fmt.Fprintf(&b, "  %s/%s/%s seq=%d\n", l.DID, l.Collection, l.RKey, l.Seq)
				dids[l.DID] = true
				records++
				return true, nil
			}); err != nil {
				return "", err
			}
			n, err := tx.CountBacklinks(target, src.coll, src.path)
			if err != nil {
				return "", err
			}
			if want := (store.BacklinkCount{Records: records, DIDs: int64(len(dids))}); n != want || src.n != want {
				t.Errorf("%s from %s:%s: CountBacklinks = %+v, ScanLinkSources = %+v; a recount gives %+v", target, src.coll, src.path, n, src.n, want)
			}
		}
	}
	c, err := tx.Counts()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "links=%d\n", c.Links)
	return b.String(), nil
}

// readLinkState runs linkState in its own View.
func readLinkState(t *testing.T, s store.Store, targets ...string) string {
	t.Helper()
	var out string
	view(t, s, func(tx store.ReadTx) (err error) {
		out, err = linkState(t, tx, targets...)
		return err
	})
	return out
}

func testLinksPutReplaceRemove(t *testing.T, s store.Store) {
	const did, rkey = "did:plc:alice", "3kreply"
	mention := "did:plc:carol"
	var seq uint64
	update(t, s, func(tx store.Tx) error {
		var err error
		// A reply whose parent is its root, mentioning carol twice: the
		// duplicate is stored once, the one post at two paths twice.
		seq, err = putLinked(tx, did, postColl, rkey,
			link(postURI, "reply.parent.uri"), link(postURI, "reply.root.uri"),
			link(mention, "facets[].features[].did"), link(mention, "facets[].features[].did"))
		if err != nil {
			return err
		}
		// The Update reads its own writes.
		n, err := tx.CountBacklinks(postURI, postColl, "reply.root.uri")
		if err != nil {
			return err
		}
		if n != (store.BacklinkCount{Records: 1, DIDs: 1}) {
			t.Errorf("CountBacklinks inside the Update that put the link = %+v, want 1 record, 1 DID", n)
		}
		return nil
	})
	targets := []string{postURI, mention, "did:plc:dave", otherPost}
	want := fmt.Sprintf(`source %[1]s app.bsky.feed.post:reply.parent.uri records=1 dids=1
  did:plc:alice/app.bsky.feed.post/3kreply seq=%[3]d
source %[1]s app.bsky.feed.post:reply.root.uri records=1 dids=1
  did:plc:alice/app.bsky.feed.post/3kreply seq=%[3]d
source %[2]s app.bsky.feed.post:facets[].features[].did records=1 dids=1
  did:plc:alice/app.bsky.feed.post/3kreply seq=%[3]d
links=3
`, postURI, mention, seq)
	if got := readLinkState(t, s, targets...); got != want {
		t.Errorf("after PutLinks:\n%s\nwant\n%s", got, want)
	}
	// The Backlink carries the linking record and its position.
	got := scanLinks(t, s, store.BacklinkScan{Target: mention, Collection: postColl, Path: "facets[].features[].did"}, 0)
	if wantB := []store.Backlink{{DID: did, Collection: postColl, RKey: rkey, Path: "facets[].features[].did", Seq: seq}}; !reflect.DeepEqual(got, wantB) {
		t.Errorf("ScanBacklinks = %+v, want %+v", got, wantB)
	}

	// Replacing keeps one link, drops two, adds one.
	update(t, s, func(tx store.Tx) error {
		return tx.PutLinks(did, postColl, rkey, seq, []store.Link{link("did:plc:dave", "facets[].features[].did"), link(postURI, "reply.parent.uri")})
	})
	want = fmt.Sprintf(`source %[1]s app.bsky.feed.post:reply.parent.uri records=1 dids=1
  did:plc:alice/app.bsky.feed.post/3kreply seq=%[2]d
source did:plc:dave app.bsky.feed.post:facets[].features[].did records=1 dids=1
  did:plc:alice/app.bsky.feed.post/3kreply seq=%[2]d
links=2
`, postURI, seq)
	if got := readLinkState(t, s, targets...); got != want {
		t.Errorf("after replacing the links:\n%s\nwant\n%s", got, want)
	}
	if n := countLinks(t, s, mention, postColl, "facets[].features[].did"); n != (store.BacklinkCount{}) {
		t.Errorf("CountBacklinks of a removed link = %+v, want zero", n)
	}

	// Empty links remove them (nil or empty), also for a record that has
	// none; the record itself stays.
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutLinks(did, postColl, rkey, seq, nil); err != nil {
			return err
		}
		if err := tx.PutLinks(did, postColl, rkey, seq, []store.Link{}); err != nil {
			return err
		}
		return tx.PutLinks("did:plc:nobody", postColl, rkey, 7, nil)
	})
	if got, want := readLinkState(t, s, targets...), "links=0\n"; got != want {
		t.Errorf("after removing the links:\n%s\nwant\n%s", got, want)
	}
	if getRecord(t, s, did, postColl, rkey) == nil {
		t.Errorf("PutLinks with no links removed the record")
	}

	// PutRecord alone indexes nothing.
	update(t, s, func(tx store.Tx) error { return tx.PutRecord(newRecord(did, likeColl, "3klike", postURI)) })
	if c := counts(t, s); c.Links != 0 {
		t.Errorf("Counts().Links = %d after a PutRecord without PutLinks, want 0", c.Links)
	}
}

// backlinkFixture writes the records linking to postURI from likes'
// subject.uri, in three transactions, with rkeys that do not sort like
// their positions, and noise around them: the same target from sources
// whose names extend or shorten the source's, and targets that extend or
// shorten postURI. It returns "did/rkey" of the linking records and
// their positions, oldest first.
func backlinkFixture(t *testing.T, s store.Store) (keys []string, seqs []uint64) {
	t.Helper()
	dids := []string{"did:plc:b", "did:plc:a", "did:plc:c"}
	noise := []store.Link{
		link(postURI, "subject"), link(postURI, subject+"x"), link(postURI+"x", subject), link(postURI[:len(postURI)-1], subject),
	}
	for round := range 3 {
		update(t, s, func(tx store.Tx) error {
			for i := range 5 {
				n := round*5 + i
				did := dids[n%3]
				rkey := fmt.Sprintf("3k%02d", 40-n)
				seq, err := putLinked(tx, did, likeColl, rkey, link(postURI, subject))
				if err != nil {
					return err
				}
				keys, seqs = append(keys, did+"/"+rkey), append(seqs, seq)
				if _, err := putLinked(tx, did, likeColl+"x", rkey, link(postURI, subject)); err != nil {
					return err
				}
				if _, err := putLinked(tx, did, "app.bsky.feed.lik", rkey, link(postURI, subject)); err != nil {
					return err
				}
				if _, err := putLinked(tx, did, postColl, rkey, noise[n%len(noise)]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return keys, seqs
}

func testBacklinksOrder(t *testing.T, s store.Store) {
	keys, seqs := backlinkFixture(t, s)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("PutRecord positions %v: not increasing", seqs)
		}
	}
	// expected computes the answer from the fixture.
	expected := func(after uint64, reverse bool) []string {
		var out []string
		for i, k := range keys {
			if after == 0 || !reverse && seqs[i] < after || reverse && seqs[i] > after {
				out = append(out, fmt.Sprintf("%s@%d", k, seqs[i]))
			}
		}
		if !reverse {
			slices.Reverse(out)
		}
		return out
	}
	render := func(bs []store.Backlink) []string {
		var out []string
		for _, b := range bs {
			out = append(out, fmt.Sprintf("%s/%s@%d", b.DID, b.RKey, b.Seq))
		}
		return out
	}
	last := seqs[len(seqs)-1]
	tests := []struct {
		name  string
		after uint64
	}{
		{"from the start", 0},
		{"after the oldest", seqs[0]},
		{"after the second", seqs[1]},
		{"after a middle one", seqs[7]},
		{"after the newest", last},
		{"after a position of another source", seqs[7] + 1},
		{"after a position beyond every record", last + 1000},
		{"after the largest position", math.MaxUint64},
	}
	for _, tc := range tests {
		for _, reverse := range []bool{false, true} {
			q := store.BacklinkScan{Target: postURI, Collection: likeColl, Path: subject, After: tc.after, Reverse: reverse}
			if got, want := render(scanLinks(t, s, q, 0)), expected(tc.after, reverse); !slices.Equal(got, want) {
				t.Errorf("ScanBacklinks %s (after %d, reverse %v) =\n%v\nwant\n%v", tc.name, tc.after, reverse, got, want)
			}
		}
	}
	// Paging with the last position as cursor visits everything once.
	for _, reverse := range []bool{false, true} {
		var got []string
		var after uint64
		for page := 0; page < 20; page++ {
			items := scanLinks(t, s, store.BacklinkScan{Target: postURI, Collection: likeColl, Path: subject, After: after, Reverse: reverse}, 4)
			if len(items) == 0 {
				break
			}
			got = append(got, render(items)...)
			after = items[len(items)-1].Seq
		}
		if want := expected(0, reverse); !slices.Equal(got, want) {
			t.Errorf("paged ScanBacklinks (reverse %v) =\n%v\nwant\n%v", reverse, got, want)
		}
	}
	if n := countLinks(t, s, postURI, likeColl, subject); n != (store.BacklinkCount{Records: 15, DIDs: 3}) {
		t.Errorf("CountBacklinks = %+v, want 15 records, 3 DIDs", n)
	}
	// Nothing matches by prefix.
	for _, q := range []store.BacklinkScan{
		{Target: postURI, Collection: "app.bsky.feed", Path: subject},
		{Target: postURI, Collection: likeColl, Path: "subject.ur"},
		{Target: postURI, Collection: likeColl, Path: ""},
		{Target: "at://did:plc:bob", Collection: likeColl, Path: subject},
		{Target: "", Collection: likeColl, Path: subject},
		{Target: "at://did:plc:nobody/app.bsky.feed.post/3k", Collection: likeColl, Path: subject},
	} {
		if got := scanLinks(t, s, q, 0); len(got) != 0 {
			t.Errorf("ScanBacklinks(%+v) visited %d links, want none", q, len(got))
		}
		if n := countLinks(t, s, q.Target, q.Collection, q.Path); n != (store.BacklinkCount{}) {
			t.Errorf("CountBacklinks(%+v) = %+v, want zero", q, n)
		}
	}
}

// testBacklinksManyPages links more records to one target than a store
// is likely to read in one page.
func testBacklinksManyPages(t *testing.T, s store.Store) {
	const n, dids = 700, 7
	update(t, s, func(tx store.Tx) error {
		for i := range n {
			if _, err := putLinked(tx, fmt.Sprintf("did:plc:m%d", i%dids), likeColl, fmt.Sprintf("3k%04d", i), link(postURI, subject)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, reverse := range []bool{false, true} {
		got := scanLinks(t, s, store.BacklinkScan{Target: postURI, Collection: likeColl, Path: subject, Reverse: reverse}, 0)
		if len(got) != n {
			t.Errorf("ScanBacklinks (reverse %v) visited %d, want %d", reverse, len(got), n)
		}
		for i := 1; i < len(got); i++ {
			if reverse && got[i].Seq <= got[i-1].Seq || !reverse && got[i].Seq >= got[i-1].Seq {
				t.Errorf("ScanBacklinks (reverse %v): position %d after %d", reverse, got[i].Seq, got[i-1].Seq)
				break
			}
		}
	}
	if c := countLinks(t, s, postURI, likeColl, subject); c != (store.BacklinkCount{Records: n, DIDs: dids}) {
		t.Errorf("CountBacklinks = %+v, want %d records, %d DIDs", c, n, dids)
	}
	if c := counts(t, s); c.Links != n {
		t.Errorf("Counts().Links = %d, want %d", c.Links, n)
	}
}

// testBacklinksMove: a record written again, with its links at its new
// position, becomes the newest linking record; nothing is counted twice.
func testBacklinksMove(t *testing.T, s store.Store) {
	var seqs []uint64
	update(t, s, func(tx store.Tx) error {
		for _, rkey := range []string{"3k1", "3k2", "3k3"} {
			seq, err := putLinked(tx, "did:plc:a", likeColl, rkey, link(postURI, subject))
			if err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return nil
	})
	var moved uint64
	update(t, s, func(tx store.Tx) error {
		r := newRecord("did:plc:a", likeColl, "3k1", "liked again")
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		moved = r.Seq
		return tx.PutLinks(r.DID, r.Collection, r.RKey, r.Seq, []store.Link{link(postURI, subject)})
	})
	got := scanLinks(t, s, store.BacklinkScan{Target: postURI, Collection: likeColl, Path: subject}, 0)
	want := []store.Backlink{
		{DID: "did:plc:a", Collection: likeColl, RKey: "3k1", Path: subject, Seq: moved},
		{DID: "did:plc:a", Collection: likeColl, RKey: "3k3", Path: subject, Seq: seqs[2]},
		{DID: "did:plc:a", Collection: likeColl, RKey: "3k2", Path: subject, Seq: seqs[1]},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ScanBacklinks after a record moved =\n%+v\nwant\n%+v", got, want)
	}
	if got := scanLinks(t, s, store.BacklinkScan{Target: postURI, Collection: likeColl, Path: subject, After: seqs[0], Reverse: true}, 0); len(got) != 3 {
		t.Errorf("ScanBacklinks oldest first after the old position visited %d, want 3 (the moved record at its new place)", len(got))
	}
	if n := countLinks(t, s, postURI, likeColl, subject); n != (store.BacklinkCount{Records: 3, DIDs: 1}) {
		t.Errorf("CountBacklinks after a move = %+v, want 3 records, 1 DID", n)
	}
	if c := counts(t, s); c.Links != 3 {
		t.Errorf("Counts().Links after a move = %d, want 3", c.Links)
	}
}

func testDeleteRecordRemovesLinks(t *testing.T, s store.Store) {
	targets := []string{postURI, otherPost}
	update(t, s, func(tx store.Tx) error {
		if _, err := putLinked(tx, "did:plc:a", postColl, "3ka", link(postURI, "reply.parent.uri"), link(postURI, "reply.root.uri")); err != nil {
			return err
		}
		if _, err := putLinked(tx, "did:plc:b", postColl, "3kb", link(postURI, "reply.root.uri")); err != nil {
			return err
		}
		_, err := putLinked(tx, "did:plc:b", likeColl, "3kb", link(otherPost, subject))
		return err
	})
	before := readLinkState(t, s, targets...)
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRecord("did:plc:a", postColl, "3ka"); err != nil {
			return err
		}
		return tx.DeleteRecord("did:plc:a", postColl, "3ka")
	})
	var bSeq, likeSeq uint64
	for _, l := range scanLinks(t, s, store.BacklinkScan{Target: postURI, Collection: postColl, Path: "reply.root.uri"}, 0) {
		bSeq = l.Seq
	}
	for _, l := range scanLinks(t, s, store.BacklinkScan{Target: otherPost, Collection: likeColl, Path: subject}, 0) {
		likeSeq = l.Seq
	}
	want := fmt.Sprintf(`source %s app.bsky.feed.post:reply.root.uri records=1 dids=1
  did:plc:b/app.bsky.feed.post/3kb seq=%d
source %s app.bsky.feed.like:subject.uri records=1 dids=1
  did:plc:b/app.bsky.feed.like/3kb seq=%d
links=2
`, postURI, bSeq, otherPost, likeSeq)
	if got := readLinkState(t, s, targets...); got != want {
		t.Errorf("after DeleteRecord:\n%s\nwant\n%s\n(before:\n%s)", got, want, before)
	}

	// In one Update: a record deleted and written again without links has
	// none; one written with links and then deleted has none.
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRecord("did:plc:b", postColl, "3kb"); err != nil {
			return err
		}
		if err := tx.PutRecord(newRecord("did:plc:b", postColl, "3kb", "no links now")); err != nil {
			return err
		}
		if _, err := putLinked(tx, "did:plc:c", postColl, "3kc", link(postURI, "reply.root.uri")); err != nil {
			return err
		}
		return tx.DeleteRecord("did:plc:c", postColl, "3kc")
	})
	want = fmt.Sprintf(`source %s app.bsky.feed.like:subject.uri records=1 dids=1
  did:plc:b/app.bsky.feed.like/3kb seq=%d
links=1
`, otherPost, likeSeq)
	if got := readLinkState(t, s, targets...); got != want {
		t.Errorf("after deletes and rewrites in one Update:\n%s\nwant\n%s", got, want)
	}

	// DeleteRepo does not remove records, nor their links.
	update(t, s, func(tx store.Tx) error { return tx.DeleteRepo("did:plc:b") })
	if got := readLinkState(t, s, targets...); got != want {
		t.Errorf("after DeleteRepo:\n%s\nwant\n%s", got, want)
	}
}

// testBacklinkCounts follows the counts of one source through a sequence
// of writes; after each, linkState also checks them against a recount.
func testBacklinkCounts(t *testing.T, s store.Store) {
	like := func(did, rkey string, targets ...string) func(tx store.Tx) error {
		return func(tx store.Tx) error {
			var links []store.Link
			for _, target := range targets {
				links = append(links, link(target, subject))
			}
			_, err := putLinked(tx, did, likeColl, rkey, links...)
			return err
		}
	}
	steps := []struct {
		name        string
		write       func(tx store.Tx) error
		post, other store.BacklinkCount
		links       int64
	}{
		{"alice likes", like("did:plc:alice", "3k1", postURI), store.BacklinkCount{Records: 1, DIDs: 1}, store.BacklinkCount{}, 1},
		{"alice likes again from a second record", like("did:plc:alice", "3k2", postURI), store.BacklinkCount{Records: 2, DIDs: 1}, store.BacklinkCount{}, 2},
		{"bob likes", like("did:plc:bob", "3k1", postURI), store.BacklinkCount{Records: 3, DIDs: 2}, store.BacklinkCount{}, 3},
		{"carol's record holds the link twice", like("did:plc:carol", "3k1", postURI, postURI), store.BacklinkCount{Records: 4, DIDs: 3}, store.BacklinkCount{}, 4},
		{"alice's first like now points elsewhere", like("did:plc:alice", "3k1", otherPost), store.BacklinkCount{Records: 3, DIDs: 3}, store.BacklinkCount{Records: 1, DIDs: 1}, 4},
		{"alice's second like deleted", func(tx store.Tx) error { return tx.DeleteRecord("did:plc:alice", likeColl, "3k2") },
			store.BacklinkCount{Records: 2, DIDs: 2}, store.BacklinkCount{Records: 1, DIDs: 1}, 3},
		{"carol's links removed", func(tx store.Tx) error { return tx.PutLinks("did:plc:carol", likeColl, "3k1", 99, nil) },
			store.BacklinkCount{Records: 1, DIDs: 1}, store.BacklinkCount{Records: 1, DIDs: 1}, 2},
		{"bob's like deleted", func(tx store.Tx) error { return tx.DeleteRecord("did:plc:bob", likeColl, "3k1") },
			store.BacklinkCount{}, store.BacklinkCount{Records: 1, DIDs: 1}, 1},
		{"alice likes once more", like("did:plc:alice", "3k3", postURI), store.BacklinkCount{Records: 1, DIDs: 1}, store.BacklinkCount{Records: 1, DIDs: 1}, 2},
		{"alice's links both ways in one Update", func(tx store.Tx) error {
			if err := like("did:plc:alice", "3k4", postURI)(tx); err != nil {
				return err
			}
			if err := tx.DeleteRecord("did:plc:alice", likeColl, "3k3"); err != nil {
				return err
			}
			return tx.DeleteRecord("did:plc:alice", likeColl, "3k1")
		}, store.BacklinkCount{Records: 1, DIDs: 1}, store.BacklinkCount{}, 1},
	}
	for _, st := range steps {
		update(t, s, st.write)
		if n := countLinks(t, s, postURI, likeColl, subject); n != st.post {
			t.Errorf("%s: CountBacklinks(post) = %+v, want %+v", st.name, n, st.post)
		}
		if n := countLinks(t, s, otherPost, likeColl, subject); n != st.other {
			t.Errorf("%s: CountBacklinks(other post) = %+v, want %+v", st.name, n, st.other)
		}
		state := readLinkState(t, s, postURI, otherPost) // checks counts against a recount
		if !strings.HasSuffix(state, fmt.Sprintf("links=%d\n", st.links)) {
			t.Errorf("%s: want links=%d; index:\n%s", st.name, st.links, state)
		}
		if st.post == (store.BacklinkCount{}) && strings.Contains(state, "source "+postURI+" ") {
			t.Errorf("%s: ScanLinkSources still visits a source without links:\n%s", st.name, state)
		}
	}
}

func testLinkSources(t *testing.T, s store.Store) {
	// Sources in pair order; "a.b" + "/" + "z" would sort after "a.b.c/a"
	// as one string, and "subject" is a prefix of other paths.
	sources := [][2]string{
		{"a.b", "subject"}, {"a.b", "subject.uri"}, {"a.b", "subject[].uri"}, {"a.b", "z"},
		{"a.b-c", "m"}, {"a.b.c", "a"}, {"a.bc", "a"}, {"b", "x"},
	}
	shuffled := []int{5, 2, 7, 0, 3, 6, 1, 4}
	update(t, s, func(tx store.Tx) error {
		for _, i := range shuffled {
			src := sources[i]
			// Source i is linked by i%3+1 records of distinct DIDs.
			for j := range i%3 + 1 {
				if _, err := putLinked(tx, fmt.Sprintf("did:plc:%d", j), src[0], fmt.Sprintf("3k%d", i), link(postURI, src[1])); err != nil {
					return err
				}
			}
			// Noise: other targets from the same sources.
			if _, err := putLinked(tx, "did:plc:n", src[0], fmt.Sprintf("3kn%d", i), link(postURI+"x", src[1]), link(postURI[:len(postURI)-1], src[1])); err != nil {
				return err
			}
		}
		// A second record of did:plc:0 on the first source: 2 records, 1 DID.
		_, err := putLinked(tx, "did:plc:0", "a.b", "3kextra", link(postURI, "subject"))
		return err
	})
	var got []string
	view(t, s, func(tx store.ReadTx) error {
		return tx.ScanLinkSources(postURI, func(coll, path string, n store.BacklinkCount) (bool, error) {
			got = append(got, fmt.Sprintf("%s:%s %d/%d", coll, path, n.Records, n.DIDs))
			return true, nil
		})
	})
	var want []string
	for i, src := range sources {
		n := i%3 + 1
		records := n
		if i == 0 {
			records++
		}
		want = append(want, fmt.Sprintf("%s:%s %d/%d", src[0], src[1], records, n))
	}
	if !slices.Equal(got, want) {
		t.Errorf("ScanLinkSources =\n%v\nwant\n%v", got, want)
	}
	var none int
	view(t, s, func(tx store.ReadTx) error {
		return tx.ScanLinkSources("at://did:plc:nobody", func(string, string, store.BacklinkCount) (bool, error) { none++; return true, nil })
	})
	if none != 0 {
		t.Errorf("ScanLinkSources of a target without links visited %d", none)
	}
}

// linkFixture writes records with links for the tests of failures and
// isolation, and returns the targets.
func linkFixture(t *testing.T, s store.Store) []string {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for i, did := range []string{"did:plc:p1", "did:plc:p2", "did:plc:p1"} {
			rkey := fmt.Sprintf("3k%d", i)
			if _, err := putLinked(tx, did, likeColl, rkey, link(postURI, subject)); err != nil {
				return err
			}
			if _, err := putLinked(tx, did, postColl, rkey, link(postURI, "reply.root.uri"), link(otherPost, "reply.parent.uri")); err != nil {
				return err
			}
		}
		return nil
	})
	return []string{postURI, otherPost, "did:plc:new"}
}

func testLinksFailedUpdate(t *testing.T, s store.Store) {
	targets := linkFixture(t, s)
	before := readLinkState(t, s, targets...)
	errBoom := errors.New("boom")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		steps := []func() error{
			func() error {
				_, err := putLinked(tx, "did:plc:p3", likeColl, "3k9", link(postURI, subject))
				return err
			},
			func() error {
				_, err := putLinked(tx, "did:plc:p3", "app.bsky.graph.follow", "3k9", link("did:plc:new", "subject"))
				return err
			},
			func() error {
				return tx.PutLinks("did:plc:p1", likeColl, "3k0", 1000, []store.Link{link(otherPost, subject)})
			},
			func() error { return tx.PutLinks("did:plc:p2", postColl, "3k1", 1000, nil) },
			func() error { return tx.DeleteRecord("did:plc:p1", postColl, "3k2") },
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
	if after := readLinkState(t, s, targets...); after != before {
		t.Errorf("a failed Update changed the backlink index:\nbefore\n%s\nafter\n%s", before, after)
	}
}

func testLinksSnapshotIsolation(t *testing.T, s store.Store) {
	targets := linkFixture(t, s)
	started := make(chan struct{})
	committed := make(chan error, 1)
	var sawBefore, sawAfter string
	var wg sync.WaitGroup
	wg.Go(func() {
		err := s.View(t.Context(), func(tx store.ReadTx) error {
			var err error
			if sawBefore, err = linkState(t, tx, targets...); err != nil {
				return err
			}
			close(started)
			select { // as in testSnapshotIsolation
			case <-committed:
			case <-time.After(2 * time.Second):
			}
			sawAfter, err = linkState(t, tx, targets...)
			return err
		})
		if err != nil {
			t.Errorf("View: %v", err)
		}
	})
	<-started
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if _, err := putLinked(tx, "did:plc:p3", likeColl, "3k9", link(postURI, subject)); err != nil {
			return err
		}
		if err := tx.PutLinks("did:plc:p1", likeColl, "3k0", 1000, []store.Link{link("did:plc:new", subject)}); err != nil {
			return err
		}
		return tx.DeleteRecord("did:plc:p2", postColl, "3k1")
	})
	committed <- err
	wg.Wait()
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if sawAfter != sawBefore {
		t.Errorf("a View saw a commit made after it started:\nbefore\n%s\nafter\n%s", sawBefore, sawAfter)
	}
	if now := readLinkState(t, s, targets...); now == sawBefore {
		t.Errorf("a View started after the commit does not see it:\n%s", now)
	}
}

func testLinkScansStopAndFail(t *testing.T, s store.Store) {
	targets := linkFixture(t, s)
	scans := []struct {
		name string
		scan func(tx store.ReadTx, visit func() (bool, error)) error
	}{
		{"ScanBacklinks", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanBacklinks(store.BacklinkScan{Target: targets[0], Collection: likeColl, Path: subject},
				func(*store.Backlink) (bool, error) { return visit() })
		}},
		{"ScanBacklinksReverse", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanBacklinks(store.BacklinkScan{Target: targets[0], Collection: likeColl, Path: subject, Reverse: true},
				func(*store.Backlink) (bool, error) { return visit() })
		}},
		{"ScanLinkSources", func(tx store.ReadTx, visit func() (bool, error)) error {
			return tx.ScanLinkSources(targets[0], func(string, string, store.BacklinkCount) (bool, error) { return visit() })
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

// testLinksInvalidRefused: PutLinks refuses what store.Tx says every
// store refuses, and writes nothing, even when fn goes on to commit.
func testLinksInvalidRefused(t *testing.T, s store.Store) {
	good := []store.Link{link(postURI, subject)}
	tests := []struct {
		name            string
		did, coll, rkey string
		seq             uint64
		links           []store.Link
	}{
		{"empty DID", "", likeColl, "3k1", 1, good},
		{"empty collection", "did:plc:a", "", "3k1", 1, good},
		{"empty target", "did:plc:a", likeColl, "3k1", 1, []store.Link{link(postURI, subject), link("", subject)}},
		{"empty rkey", "did:plc:a", likeColl, "", 1, good},
		{"position 0", "did:plc:a", likeColl, "3k1", 0, good},
		{"empty path", "did:plc:a", likeColl, "3k1", 1, []store.Link{link(postURI, "")}},
	}
	for _, tc := range tests {
		update(t, s, func(tx store.Tx) error {
			if err := tx.PutLinks(tc.did, tc.coll, tc.rkey, tc.seq, tc.links); err == nil {
				t.Errorf("%s: PutLinks accepted it", tc.name)
			}
			return nil
		})
	}
	if got, want := readLinkState(t, s, postURI, otherPost, ""), "links=0\n"; got != want {
		t.Errorf("after refused links, the index holds:\n%s", got)
	}
}
