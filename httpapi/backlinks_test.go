package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// likeRecord is a like of uri (cid) as DAG-CBOR.
func likeRecord(t *testing.T, uri, cid string) []byte {
	t.Helper()
	m, err := atdata.UnmarshalJSON([]byte(fmt.Sprintf(`{"$type":"app.bsky.feed.like","createdAt":"2026-01-01T00:00:00.000Z","subject":{"uri":%q,"cid":%q}}`, uri, cid)))
	if err != nil {
		t.Fatal(err)
	}
	v, err := testnet.Value(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestXRPC_Backlinks(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test")
	post, err := alice.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", "hi"))
	if err != nil {
		t.Fatal(err)
	}
	uri := "at://" + alice.DID().String() + "/" + post.Path()
	var likers []*testnet.Account
	for i := range 3 {
		a := net.Account(t, fmt.Sprintf("liker%d.test", i))
		if _, err := a.CreateRecord("app.bsky.feed.like", likeRecord(t, uri, post.CID.String())); err != nil {
			t.Fatal(err)
		}
		likers = append(likers, a)
	}
	ix, err := cistern.Open(cistern.Config{
		Path: t.TempDir() + "/c.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(),
		SkipHandleVerification: true, Logger: quiet, NoFirehose: true, Backlinks: true,
		Filter: filter.Spec{DIDs: []string{likers[0].DID().String(), likers[1].DID().String(), likers[2].DID().String()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; ix.Close() })
	for _, a := range likers {
		waitSynced(t, ix, a.DID().String())
	}
	srv := serve(t, ix, httpapi.Options{})
	source := "app.bsky.feed.like:subject.uri"
	waitFor(t, "the index", func() bool {
		return xrpc(t, srv.URL, "blue.microcosm.links.getBacklinksCount", "subject", uri, "source", source).Status == http.StatusOK
	})

	a := xrpc(t, srv.URL, "blue.microcosm.links.getBacklinksCount", "subject", uri, "source", source)
	if got := a.normalized(t); got != `{"distinctDids":3,"total":3}` {
		t.Fatalf("getBacklinksCount: %d %s", a.Status, got)
	}
	// Paged two at a time: the cursor is null on the last page.
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		kv := []string{"subject", uri, "source", source, "limit", "2"}
		if cursor != "" {
			kv = append(kv, "cursor", cursor)
		}
		a := xrpc(t, srv.URL, "blue.microcosm.links.getBacklinks", kv...)
		var out struct {
			Total   int64
			Records []struct{ DID, Collection, RKey string }
			Cursor  *string
		}
		a.decode(t, &out)
		if a.Status != http.StatusOK || out.Total != 3 {
			t.Fatalf("getBacklinks page %d: %d %s", page, a.Status, a.Body)
		}
		for _, r := range out.Records {
			if r.Collection != "app.bsky.feed.like" || r.RKey == "" {
				t.Fatalf("record %+v", r)
			}
			seen = append(seen, r.DID)
		}
		if out.Cursor == nil {
			if !strings.Contains(string(a.Body), `"cursor":null`) {
				t.Errorf("last page without a null cursor: %s", a.Body)
			}
			break
		}
		cursor = *out.Cursor
	}
	// Newest first: the likers were indexed in DID order by the backfill,
	// which is not known here; each appears once.
	if len(seen) != 3 || seen[0] == seen[1] || seen[1] == seen[2] || seen[0] == seen[2] {
		t.Fatalf("records listed: %v", seen)
	}

	for _, tc := range []struct {
		kv    []string
		param string
	}{
		{[]string{"source", source}, "subject"},
		{[]string{"subject", uri}, "source"},
		{[]string{"subject", "https://example.com", "source", source}, "subject"},
		{[]string{"subject", uri, "source", "app.bsky.feed.like"}, "source"},
		{[]string{"subject", uri, "source", "bad nsid:subject"}, "source"},
		{[]string{"subject", uri, "source", source, "limit", "101"}, "limit"},
		{[]string{"subject", uri, "source", source, "cursor", "nope"}, "cursor"},
		{[]string{"subject", uri, "source", source, "did", alice.DID().String()}, "did"},
	} {
		a := xrpc(t, srv.URL, "blue.microcosm.links.getBacklinks", tc.kv...)
		if a.Status != http.StatusBadRequest || a.errName() != "InvalidRequest" || !strings.Contains(a.errMessage(), tc.param) {
			t.Errorf("getBacklinks %v: %d %s; want a 400 naming %s", tc.kv, a.Status, a.Body, tc.param)
		}
	}

	// Before Run has built the index, the server says so.
	building, err := cistern.Open(cistern.Config{Path: t.TempDir() + "/b.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(),
		SkipHandleVerification: true, Logger: quiet, Backlinks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer building.Close()
	a = xrpc(t, serve(t, building, httpapi.Options{}).URL, "blue.microcosm.links.getBacklinksCount", "subject", uri, "source", source)
	if a.Status != http.StatusServiceUnavailable || a.errName() != "IndexNotReady" {
		t.Fatalf("getBacklinksCount before the build: %d %s", a.Status, a.Body)
	}

	// A server whose indexer keeps no index says so.
	off := serve(t, openIndexer(t, net, filter.Spec{}), httpapi.Options{})
	a = xrpc(t, off.URL, "blue.microcosm.links.getBacklinks", "subject", uri, "source", source)
	if a.Status != http.StatusNotImplemented || !strings.Contains(a.errMessage(), "backlinks") {
		t.Fatalf("getBacklinks with the index off: %d %s", a.Status, a.Body)
	}
}
