package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/filter"
)

// createValue writes a record value as given through the control API.
func (n *network) createValue(t testing.TB, did, collection string, value map[string]any) writeResult {
	t.Helper()
	value["$type"] = collection
	value["createdAt"] = time.Now().UTC().Format(time.RFC3339Nano)
	var out writeResult
	n.must(t, "/records", map[string]any{"did": did, "collection": collection, "record": value}, &out)
	return out
}

// backlinkAnswer is what getBacklinks and getBacklinksCount answer.
type backlinkAnswer struct {
	Total        int64 `json:"total"`
	DistinctDIDs int64 `json:"distinctDids"`
	Records      []struct {
		DID        string `json:"did"`
		Collection string `json:"collection"`
		RKey       string `json:"rkey"`
	} `json:"records"`
	Cursor *string `json:"cursor"`
}

func getBacklinks(base, method, subject, source string) (*backlinkAnswer, error) {
	q := url.Values{"subject": {subject}, "source": {source}}
	resp, err := http.Get(base + "/xrpc/blue.microcosm.links." + method + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %s", method, resp.StatusCode, body)
	}
	var a backlinkAnswer
	return &a, json.Unmarshal(body, &a)
}

// Likes and follows written to the reference PDS, some before cistern
// starts (backfilled) and some live, are answered by getBacklinks and
// getBacklinksCount; a like deleted on the PDS leaves them; and the index
// equals a recount of the stored records.
func TestBacklinks_LikesAndFollowsOfThePDS(t *testing.T) {
	n := refnet(t)
	alice, bob, carol := n.createAccount(t, "blal"), n.createAccount(t, "blbo"), n.createAccount(t, "blca")
	post := n.create(t, alice.DID, "app.bsky.feed.post", "like me")
	ref := map[string]any{"uri": post.URI, "cid": post.CID}
	n.createValue(t, bob.DID, "app.bsky.feed.like", map[string]any{"subject": ref})
	n.createValue(t, bob.DID, "app.bsky.graph.follow", map[string]any{"subject": alice.DID})

	dids := []string{alice.DID, bob.DID, carol.DID}
	cfg := indexerConfig(t, n, filepath.Join(t.TempDir(), "c.db"), filter.Spec{DIDs: dids,
		Collections: []string{"app.bsky.feed.*", "app.bsky.graph.*"}})
	cfg.Backlinks = true
	ix := startIndexer(t, cfg)
	waitSynced(t, ix.Indexer, dids...)
	api := serveAPI(t, ix.Indexer)

	carolLike := n.createValue(t, carol.DID, "app.bsky.feed.like", map[string]any{"subject": ref})
	n.createValue(t, carol.DID, "app.bsky.graph.follow", map[string]any{"subject": alice.DID})

	check := func(method, subject, source string, total, distinct int64, who ...string) {
		t.Helper()
		eventually(t, convergeTimeout, method+" "+source, func() error {
			a, err := getBacklinks(api.base, method, subject, source)
			if err != nil {
				return err
			}
			if method == "getBacklinksCount" {
				if a.Total != total || a.DistinctDIDs != distinct {
					return fmt.Errorf("count %+v, want %d of %d DIDs", a, total, distinct)
				}
				return nil
			}
			var got []string
			for _, r := range a.Records {
				got = append(got, r.DID)
			}
			if a.Total != total || !slices.Equal(got, who) || a.Cursor != nil {
				return fmt.Errorf("got total %d %v, want %d %v", a.Total, got, total, who)
			}
			return nil
		})
	}
	likes, follows := "app.bsky.feed.like:subject.uri", "app.bsky.graph.follow:subject"
	check("getBacklinks", post.URI, likes, 2, 2, carol.DID, bob.DID) // newest first
	check("getBacklinksCount", post.URI, likes, 2, 2)
	check("getBacklinks", alice.DID, follows, 2, 2, carol.DID, bob.DID)
	check("getBacklinksCount", alice.DID, follows, 2, 2)

	n.del(t, carol.DID, "app.bsky.feed.like", rkeyOf(carolLike.URI))
	check("getBacklinks", post.URI, likes, 1, 1, bob.DID)
	if err := backlinks.Verify(context.Background(), ix.Store()); err != nil {
		t.Fatal(err)
	}
}
