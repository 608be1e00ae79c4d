package backfill

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/cistern-dev/cistern/filter"
)

func TestRangesOf(t *testing.T) {
	cases := []struct {
		patterns []string
		want     keyRanges
	}{
		{nil, everything},
		{[]string{"*"}, everything},
		{[]string{"a.b.c", "*"}, everything},
		{[]string{"a.b.c"}, keyRanges{{"a.b.c/", "a.b.c0"}}},
		{[]string{"a.b.*"}, keyRanges{{"a.b.", "a.b/"}}},
		// A prefix swallows the collections under it.
		{[]string{"a.b.c", "a.b.*", "x.y.z"}, keyRanges{{"a.b.", "a.b/"}, {"x.y.z/", "x.y.z0"}}},
		{[]string{"x.y.z", "a.b.c"}, keyRanges{{"a.b.c/", "a.b.c0"}, {"x.y.z/", "x.y.z0"}}},
	}
	for _, c := range cases {
		if got := rangesOf(c.patterns); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("rangesOf(%q) = %v, want %v", c.patterns, got, c.want)
		}
	}
}

// TestRanges_AgreeWithTheFilter checks that a key is in the ranges exactly
// when the filter stores its collection.
func TestRanges_AgreeWithTheFilter(t *testing.T) {
	patterns := []string{"app.bsky.graph.*", "xyz.statusphere.status", "app.bsky.feed.post"}
	f, err := filter.Compile(filter.Spec{FullNetwork: true, Collections: patterns})
	if err != nil {
		t.Fatal(err)
	}
	rs := rangesOf(patterns)
	colls := []string{"app.bsky.graph.follow", "app.bsky.graph.x.y", "app.bsky.graphs.follow", "app.bsky.feed.post",
		"app.bsky.feed.posts", "app.bsky.feed.pos", "app.bsky.feed.postx", "xyz.statusphere.status", "xyz.statusphere.statuses",
		"a.b.c", "zzz.y.z", "app.bsky.feed.like"}
	for _, coll := range colls {
		for _, rkey := range []string{"3kabc", "self", "~", "-"} {
			key := coll + "/" + rkey
			if got, want := rs.contains(key), f.Stores(coll); got != want {
				t.Errorf("contains(%q) = %v, but the filter stores it: %v", key, got, want)
			}
		}
	}
}

func TestRanges_MayOverlap(t *testing.T) {
	rs := rangesOf([]string{"b.b.b", "d.d.*"})
	cases := []struct {
		after, before string
		want          bool
	}{
		{"", "", true},
		{"", "a.a.a/1", false},
		{"", "b.b.b/", false},
		{"", "b.b.b/1", true},
		{"b.b.b/9", "c.c.c/1", true}, // keys after b.b.b/9 may still be in b.b.b
		{"b.b.b0", "c.c.c/1", false},
		{"c.c.c/1", "d.d.", false},
		{"c.c.c/1", "d.d.a/1", true}, // "d.d.a.b/1" sorts before "d.d.a/1"
		{"c.c.c/1", "d.d.e/1", true},
		{"d.e.a/1", "", false},
		{"a.a.a/1", "", true},
	}
	for _, c := range cases {
		if got := rs.mayOverlap(c.after, c.before); got != c.want {
			t.Errorf("mayOverlap(%q, %q) = %v, want %v", c.after, c.before, got, c.want)
		}
	}
}

// TestVisitNode_RefusesMalformedNodes checks that a node whose keys are out
// of order, outside the span its parent gives it, or built from an
// impossible prefix is refused as malformed.
func TestVisitNode_RefusesMalformedNodes(t *testing.T) {
	val, _ := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum([]byte("x"))
	f, err := filter.Compile(filter.Spec{FullNetwork: true, Collections: []string{"a.b.c"}})
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := planSparse(f, false, StrategySparse)
	entry := func(p int64, suffix string) mst.EntryData {
		return mst.EntryData{PrefixLen: p, KeySuffix: []byte(suffix), Value: val}
	}
	cases := []struct {
		name    string
		entries []mst.EntryData
		st      subtree
		ok      bool
	}{
		{"in order", []mst.EntryData{entry(0, "a.b.c/1"), entry(6, "2")}, subtree{}, true},
		{"out of order", []mst.EntryData{entry(0, "a.b.c/2"), entry(6, "1")}, subtree{}, false},
		{"a key twice", []mst.EntryData{entry(0, "a.b.c/2"), entry(7, "")}, subtree{}, false},
		{"before the span", []mst.EntryData{entry(0, "a.b.c/1")}, subtree{after: "a.b.c/5"}, false},
		{"after the span", []mst.EntryData{entry(0, "a.b.c/9")}, subtree{before: "a.b.c/5"}, false},
		{"prefix longer than the previous key", []mst.EntryData{entry(0, "a"), entry(3, "b")}, subtree{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nd := mst.NodeData{Entries: c.entries}
			var ks keySplitter
			sr := &sparseRepo{}
			_, err := visitNode(&nd, val, c.st, plan, plan.stored, &ks, sr, nil)
			var fl *failure
			switch {
			case c.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !c.ok && (!errors.As(err, &fl) || fl.kind != KindMalformed):
				t.Fatalf("err = %v, want a malformed failure", err)
			case c.ok && len(sr.leaves) != len(c.entries):
				t.Fatalf("%d leaves, want %d", len(sr.leaves), len(c.entries))
			}
		})
	}
}
