package cistern_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

const (
	bskyPost   = "app.bsky.feed.post"
	bskyLike   = "app.bsky.feed.like"
	bskyRepost = "app.bsky.feed.repost"
	bskyFollow = "app.bsky.graph.follow"
	bskyBlock  = "app.bsky.graph.block"
)

// jsonRecord encodes a record given as JSON.
func jsonRecord(t testing.TB, js string) []byte {
	t.Helper()
	m, err := atdata.UnmarshalJSON([]byte(js))
	if err != nil {
		t.Fatalf("record %s: %v", js, err)
	}
	v, err := testnet.Value(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func uriOf(a *testnet.Account, r testnet.Record) string {
	return "at://" + a.DID().String() + "/" + r.Path()
}

func strongRef(a *testnet.Account, r testnet.Record) string {
	return fmt.Sprintf(`{"uri":%q,"cid":%q}`, uriOf(a, r), r.CID.String())
}

// create writes a record given as JSON to a's repo.
func create(t testing.TB, a *testnet.Account, collection, js string) testnet.Record {
	t.Helper()
	r, err := a.CreateRecord(collection, jsonRecord(t, js))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const createdAt = `"createdAt":"2026-01-01T00:00:00.000Z"`

func likeOf(t testing.TB, by, a *testnet.Account, r testnet.Record) testnet.Record {
	return create(t, by, bskyLike, `{"$type":"app.bsky.feed.like",`+createdAt+`,"subject":`+strongRef(a, r)+`}`)
}

func followOf(t testing.TB, by, a *testnet.Account, collection string) testnet.Record {
	return create(t, by, collection, `{"$type":"`+collection+`",`+createdAt+`,"subject":"`+a.DID().String()+`"}`)
}

// backlinksOf lists every record linking to target from source, paging
// with limit 1 to exercise cursors, as "did collection/rkey" newest first.
func backlinksOf(t testing.TB, ix *cistern.Indexer, target, source string) []string {
	t.Helper()
	var out []string
	cursor := ""
	for range 100 {
		p, err := ix.Backlinks(context.Background(), target, source, cursor, 1)
		if err != nil {
			t.Fatalf("Backlinks(%s, %s): %v", target, source, err)
		}
		for _, b := range p.Links {
			out = append(out, b.DID+" "+b.Collection+"/"+b.RKey)
		}
		if p.Cursor == "" {
			return out
		}
		cursor = p.Cursor
	}
	t.Fatalf("Backlinks(%s, %s): more than 100 pages", target, source)
	return nil
}

func linkName(a *testnet.Account, r testnet.Record) string { return a.DID().String() + " " + r.Path() }

// assertIndexExact waits until the index equals a recount from the stored
// records.
func assertIndexExact(t testing.TB, ix *cistern.Indexer) {
	t.Helper()
	eventually(t, 20*time.Second, func() string {
		if err := backlinks.Verify(context.Background(), ix.Store()); err != nil {
			return err.Error()
		}
		return ""
	})
}

func TestBacklinks_BlueskyInteractions(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test")
	bob := net.Account(t, "bob.test")
	carol := net.Account(t, "carol.test")
	post := create(t, alice, bskyPost, `{"$type":"app.bsky.feed.post","text":"hello",`+createdAt+`}`)
	post2 := create(t, alice, bskyPost, `{"$type":"app.bsky.feed.post","text":"again",`+createdAt+`}`)
	// Before the indexer starts (backfilled): bob likes and follows.
	bobLike := likeOf(t, bob, alice, post)
	bobFollow := followOf(t, bob, alice, bskyFollow)

	dids := []string{alice.DID().String(), bob.DID().String(), carol.DID().String()}
	cfg := testConfig(t, net, filter.Spec{DIDs: dids, Collections: []string{"app.bsky.feed.*", "app.bsky.graph.*"}})
	cfg.Backlinks = true
	ix := runConnected(t, net, cfg)
	waitSynced(t, ix, dids...)

	// Live: carol likes, reposts, replies, quotes, follows and blocks.
	carolLike := likeOf(t, carol, alice, post)
	carolRepost := create(t, carol, bskyRepost, `{"$type":"app.bsky.feed.repost",`+createdAt+`,"subject":`+strongRef(alice, post)+`}`)
	reply := create(t, carol, bskyPost, `{"$type":"app.bsky.feed.post","text":"re",`+createdAt+`,"reply":{"root":`+strongRef(alice, post)+`,"parent":`+strongRef(alice, post2)+`}}`)
	quote := create(t, carol, bskyPost, `{"$type":"app.bsky.feed.post","text":"q",`+createdAt+`,"embed":{"$type":"app.bsky.embed.record","record":`+strongRef(alice, post)+`}}`)
	quoteMedia := create(t, bob, bskyPost, `{"$type":"app.bsky.feed.post","text":"qm",`+createdAt+`,"embed":{"$type":"app.bsky.embed.recordWithMedia","record":{"$type":"app.bsky.embed.record","record":`+strongRef(alice, post)+`},"media":{"$type":"app.bsky.embed.images","images":[]}}}`)
	carolFollow := followOf(t, carol, alice, bskyFollow)
	carolBlock := followOf(t, carol, bob, bskyBlock)
	assertConverged(t, ix, alice, bob, carol)

	p, a := uriOf(alice, post), alice.DID().String()
	for _, tc := range []struct {
		target, source string
		want           []string
	}{
		{p, "app.bsky.feed.like:subject.uri", []string{linkName(carol, carolLike), linkName(bob, bobLike)}},
		{p, "app.bsky.feed.repost:subject.uri", []string{linkName(carol, carolRepost)}},
		{p, "app.bsky.feed.post:reply.root.uri", []string{linkName(carol, reply)}},
		{uriOf(alice, post2), "app.bsky.feed.post:reply.parent.uri", []string{linkName(carol, reply)}},
		{p, "app.bsky.feed.post:reply.parent.uri", nil},
		{p, "app.bsky.feed.post:embed.record.uri", []string{linkName(carol, quote)}},
		{p, "app.bsky.feed.post:embed.record.record.uri", []string{linkName(bob, quoteMedia)}},
		{a, "app.bsky.graph.follow:subject", []string{linkName(carol, carolFollow), linkName(bob, bobFollow)}},
		{bob.DID().String(), "app.bsky.graph.block:subject", []string{linkName(carol, carolBlock)}},
		{a, "app.bsky.graph.block:subject", nil},
	} {
		if got := backlinksOf(t, ix, tc.target, tc.source); !slices.Equal(got, tc.want) {
			t.Errorf("%s from %s:\n got %v\nwant %v", tc.target, tc.source, got, tc.want)
		}
		n, err := ix.CountBacklinks(context.Background(), tc.target, tc.source)
		if err != nil || n.Records != int64(len(tc.want)) || n.DIDs != int64(len(tc.want)) {
			t.Errorf("count of %s from %s = %+v, %v; want %d", tc.target, tc.source, n, err, len(tc.want))
		}
	}
	assertIndexExact(t, ix)

	// A second like from bob: two records, one DID.
	bobLike2 := likeOf(t, bob, alice, post)
	eventually(t, 10*time.Second, func() string {
		n, err := ix.CountBacklinks(context.Background(), p, "app.bsky.feed.like:subject.uri")
		if err != nil || n != (store.BacklinkCount{Records: 3, DIDs: 2}) {
			return fmt.Sprintf("likes after bob's second like: %+v, %v", n, err)
		}
		return ""
	})

	// An update moves bob's like to post2; a delete drops carol's.
	if _, err := bob.PutRecord(bskyLike, bobLike2.RKey, jsonRecord(t, `{"$type":"app.bsky.feed.like",`+createdAt+`,"subject":`+strongRef(alice, post2)+`}`)); err != nil {
		t.Fatal(err)
	}
	if err := carol.DeleteRecord(bskyLike, carolLike.RKey); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, alice, bob, carol)
	assertIndexExact(t, ix)
	if got := backlinksOf(t, ix, p, "app.bsky.feed.like:subject.uri"); !slices.Equal(got, []string{linkName(bob, bobLike)}) {
		t.Fatalf("likes after update and delete: %v", got)
	}

	// A resync after changes the indexer did not see.
	if _, err := bob.Apply(testnet.Delete(bskyLike, bobLike.RKey)); err != nil {
		t.Fatal(err)
	}
	if err := ix.Resync(context.Background(), bob.DID().String()); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, ix, bob.DID().String())
	assertConverged(t, ix, alice, bob, carol)
	assertIndexExact(t, ix)

	// A narrowed filter drops the graph records and their links.
	if err := ix.SetFilter(context.Background(), filter.Spec{DIDs: dids, Collections: []string{"app.bsky.feed.*"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		n, err := ix.CountBacklinks(context.Background(), a, "app.bsky.graph.follow:subject")
		if err != nil || n.Records != 0 {
			return fmt.Sprintf("follows after narrowing: %+v, %v", n, err)
		}
		return ""
	})
	assertIndexExact(t, ix)

	// An account deletion removes carol's links.
	if _, err := carol.Delete(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		n, err := ix.CountBacklinks(context.Background(), p, "app.bsky.feed.repost:subject.uri")
		if err != nil || n.Records != 0 {
			return fmt.Sprintf("reposts after carol's deletion: %+v, %v", n, err)
		}
		return ""
	})
	assertIndexExact(t, ix)
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Backlinks.State != backlinks.StateReady || st.Backlinks.Links == 0 || st.Backlinks.Malformed != 0 {
		t.Fatalf("stats: %+v", st.Backlinks)
	}
}

func TestBacklinks_BadInput(t *testing.T) {
	net := testnet.New(t)
	cfg := testConfig(t, net, filter.Spec{})
	cfg.Backlinks = true
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	ctx := context.Background()
	eventually(t, 10*time.Second, func() string {
		if _, err := ix.CountBacklinks(ctx, "did:plc:abc", "app.bsky.graph.follow:subject"); err != nil {
			return err.Error()
		}
		return ""
	})
	good, src := "at://did:plc:abc/app.bsky.feed.post/3k", "app.bsky.feed.like:subject.uri"
	for _, tc := range []struct {
		param, target, source, cursor string
		limit                         int
	}{
		{"target", "", src, "", 0},
		{"target", "https://example.com", src, "", 0},
		{"target", "at://did:plc:abc/not an nsid", src, "", 0},
		{"target", "did:PLC:abc", src, "", 0},
		{"source", good, "", "", 0},
		{"source", good, "app.bsky.feed.like", "", 0},
		{"source", good, "app.bsky.feed.like:", "", 0},
		{"source", good, "not-an-nsid:subject.uri", "", 0},
		{"cursor", good, src, "abc", 0},
		{"cursor", good, src, "0", 0},
		{"limit", good, src, "", -1},
		{"limit", good, src, "", backlinks.MaxLimit + 1},
	} {
		_, err := ix.Backlinks(ctx, tc.target, tc.source, tc.cursor, tc.limit)
		var ie *backlinks.InputError
		if !errors.As(err, &ie) || ie.Param != tc.param || !errors.Is(err, cistern.ErrInvalidArgument) {
			t.Errorf("Backlinks(%q, %q, %q, %d) = %v; want an InputError naming %s", tc.target, tc.source, tc.cursor, tc.limit, err, tc.param)
		}
	}
	// A leading dot of the path, as constellation's own paths have, is
	// accepted.
	if _, err := ix.Backlinks(ctx, good, "app.bsky.feed.like:.subject.uri", "", 0); err != nil {
		t.Errorf("path with a leading dot: %v", err)
	}
}

func TestBacklinks_TurnedOnLaterBuildsAndTurnedOffRefuses(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test")
	bob := net.Account(t, "bob.test")
	post := create(t, alice, bskyPost, `{"$type":"app.bsky.feed.post","text":"hello",`+createdAt+`}`)
	for range 30 {
		likeOf(t, bob, alice, post)
	}
	dids := []string{alice.DID().String(), bob.DID().String()}
	cfg := testConfig(t, net, filter.Spec{DIDs: dids, Collections: []string{"app.bsky.feed.*"}})
	cfg.NoFirehose = true
	ctx := context.Background()
	src := "app.bsky.feed.like:subject.uri"

	// Off: synced without the index; queries say so.
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ix.Run(rctx) }()
	waitSynced(t, ix, dids...)
	if _, err := ix.Backlinks(ctx, uriOf(alice, post), src, "", 0); !errors.Is(err, backlinks.ErrOff) {
		t.Fatalf("Backlinks with the index off: %v, want ErrOff", err)
	}
	stop()
	<-done
	ix.Close()

	// On: Run builds the index from the stored records.
	cfg.Backlinks = true
	ix = runIndexer(t, cfg)
	eventually(t, 20*time.Second, func() string {
		n, err := ix.CountBacklinks(ctx, uriOf(alice, post), src)
		if err != nil {
			return err.Error()
		}
		if n != (store.BacklinkCount{Records: 30, DIDs: 1}) {
			return fmt.Sprintf("count %+v", n)
		}
		return ""
	})
	assertIndexExact(t, ix)
	if got := len(backlinksOf(t, ix, uriOf(alice, post), src)); got != 30 {
		t.Fatalf("%d likes listed, want 30", got)
	}
}
