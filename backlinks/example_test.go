package backlinks_test

import (
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/cistern-dev/cistern/backlinks"
)

// Extract finds the at-uris and DIDs of a record with their paths; each
// link's source is the record's collection and the path, here
// "app.bsky.feed.post:reply.parent.uri" and so on.
func ExampleExtract() {
	post, _ := atdata.UnmarshalJSON([]byte(`{
		"$type": "app.bsky.feed.post",
		"text": "@bob see this",
		"createdAt": "2026-01-01T00:00:00.000Z",
		"reply": {
			"root":   {"uri": "at://did:plc:alice/app.bsky.feed.post/3kroot", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
			"parent": {"uri": "at://did:plc:carol/app.bsky.feed.post/3kparent", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
		},
		"facets": [{"index": {"byteStart": 0, "byteEnd": 4},
			"features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:bob"}]}]
	}`))
	value, _ := atdata.MarshalCBOR(post)
	links, err := backlinks.Extract(value)
	if err != nil {
		panic(err)
	}
	for _, l := range links {
		fmt.Println(l.Path, l.Target)
	}
	// Output:
	// facets[].features[app.bsky.richtext.facet#mention].did did:plc:bob
	// reply.parent.uri at://did:plc:carol/app.bsky.feed.post/3kparent
	// reply.root.uri at://did:plc:alice/app.bsky.feed.post/3kroot
}
