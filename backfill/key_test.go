package backfill

import (
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// The byte-loop key check must decide exactly as syntax.ParseNSID and
// syntax.ParseRecordKey do.
func TestKeySplitterMatchesSyntax(t *testing.T) {
	keys := []string{
		"app.bsky.feed.post/3jzfcijpj2z2a",
		"app.bsky.feed.post/3jzfcijpj2z2b",
		"app.bsky.feed.like/self",
		"app.bsky.feed.like/a:b~c_d-e.f",
		"app.bsky.feed.like/.",
		"app.bsky.feed.like/..",
		"app.bsky.feed.like/...",
		"app.bsky.feed.like/",
		"app.bsky.feed.like/a b",
		"app.bsky.feed.like/a/b",
		"app.bsky.feed.like/é",
		"app.bsky.feed.like/" + strings.Repeat("a", 512),
		"app.bsky.feed.like/" + strings.Repeat("a", 513),
		"app.bsky.feed.like/a\n",
		"not an nsid/abc",
		"app.bsky.feed.post/ok",
		"/abc",
		"noslash",
		"a.b/c",
	}
	var ks keySplitter
	for _, k := range keys {
		coll, rkey, ok := ks.split([]byte(k))
		wantOK := false
		if i := strings.IndexByte(k, '/'); i >= 0 {
			_, errN := syntax.ParseNSID(k[:i])
			_, errR := syntax.ParseRecordKey(k[i+1:])
			wantOK = errN == nil && errR == nil
			if wantOK && (coll != k[:i] || rkey != k[i+1:]) {
				t.Errorf("%q: split into %q, %q", k, coll, rkey)
			}
		}
		if ok != wantOK {
			t.Errorf("%q: ok %v, syntax says %v", k, ok, wantOK)
		}
	}
}
