package backlinks

import (
	"errors"
	"slices"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/cistern-dev/cistern/store"
)

const (
	alice = "did:plc:aliceaaaaaaaaaaaaaaaaaaa"
	bob   = "did:plc:bobbbbbbbbbbbbbbbbbbbbbb"
	post  = "at://" + alice + "/app.bsky.feed.post/3kaaaaaaaaaa2"
	post2 = "at://" + bob + "/app.bsky.feed.post/3kbbbbbbbbbb2"
)

// cborOf encodes a JSON record as DAG-CBOR.
func cborOf(t testing.TB, js string) []byte {
	t.Helper()
	m, err := atdata.UnmarshalJSON([]byte(js))
	if err != nil {
		t.Fatalf("json %s: %v", js, err)
	}
	b, err := atdata.MarshalCBOR(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtract(t *testing.T) {
	cid := "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
	tests := []struct {
		name string
		json string
		want []store.Link
	}{
		{"like", `{"$type":"app.bsky.feed.like","createdAt":"2024-01-01T00:00:00Z","subject":{"cid":"` + cid + `","uri":"` + post + `"}}`,
			[]store.Link{{Target: post, Path: "subject.uri"}}},
		{"follow", `{"$type":"app.bsky.graph.follow","createdAt":"2024-01-01T00:00:00Z","subject":"` + bob + `"}`,
			[]store.Link{{Target: bob, Path: "subject"}}},
		{"reply", `{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2024-01-01T00:00:00Z","reply":{"root":{"cid":"` + cid + `","uri":"` + post + `"},"parent":{"cid":"` + cid + `","uri":"` + post2 + `"}}}`,
			[]store.Link{{Target: post2, Path: "reply.parent.uri"}, {Target: post, Path: "reply.root.uri"}}},
		{"quote", `{"$type":"app.bsky.feed.post","text":"q","createdAt":"2024-01-01T00:00:00Z","embed":{"$type":"app.bsky.embed.record","record":{"cid":"` + cid + `","uri":"` + post + `"}}}`,
			[]store.Link{{Target: post, Path: "embed.record.uri"}}},
		{"quote with media", `{"$type":"app.bsky.feed.post","text":"q","createdAt":"2024-01-01T00:00:00Z","embed":{"$type":"app.bsky.embed.recordWithMedia","record":{"record":{"cid":"` + cid + `","uri":"` + post + `"}},"media":{"$type":"app.bsky.embed.images","images":[]}}}`,
			[]store.Link{{Target: post, Path: "embed.record.record.uri"}}},
		{"mentions, typed array elements, duplicates once", `{"$type":"app.bsky.feed.post","text":"@bob @bob","createdAt":"2024-01-01T00:00:00Z","facets":[
			{"index":{"byteStart":0,"byteEnd":4},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"` + bob + `"}]},
			{"index":{"byteStart":5,"byteEnd":9},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"` + bob + `"}]}]}`,
			[]store.Link{{Target: bob, Path: "facets[].features[app.bsky.richtext.facet#mention].did"}}},
		{"untyped array of strings", `{"list":["` + alice + `","not a link","` + bob + `"]}`,
			[]store.Link{{Target: alice, Path: "list[]"}, {Target: bob, Path: "list[]"}}},
		{"nested arrays", `{"m":[["` + alice + `"]]}`, []store.Link{{Target: alice, Path: "m[][]"}}},
		{"not links", `{"a":"https://example.com","b":"did:","c":"at://","d":"did:plc","e":"text","f":12,"g":true,"h":null,"i":{"$link":"` + cid + `"},"j":{"$bytes":"aGVsbG8"}}`,
			nil},
		{"blob", `{"img":{"$type":"blob","ref":{"$link":"` + cid + `"},"mimeType":"image/png","size":12}}`, nil},
		{"at-uri of an account", `{"subject":"at://` + alice + `"}`, []store.Link{{Target: "at://" + alice, Path: "subject"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract(cborOf(t, tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestExtract_Malformed(t *testing.T) {
	good := cborOf(t, `{"subject":"`+bob+`"}`)
	deep := []byte{}
	for range MaxDepth + 2 {
		deep = append(deep, 0x81) // array of one
	}
	deep = append(deep, 0x01)
	tests := []struct {
		name  string
		value []byte
	}{
		{"truncated", good[:len(good)-3]},
		{"trailing bytes", append(append([]byte{}, good...), 0x01)},
		{"indefinite map", []byte{0xbf, 0x61, 'a', 0x01, 0xff}},
		{"integer map key", []byte{0xa1, 0x01, 0x01}},
		{"huge length", []byte{0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"huge array", []byte{0x9b, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"too deep", deep},
		{"reserved info", []byte{0x1c}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			links, err := Extract(tt.value)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if links != nil {
				t.Fatalf("links = %v, want none", links)
			}
		})
	}
}

func TestIsTarget(t *testing.T) {
	for s, want := range map[string]bool{
		post:                         true,
		bob:                          true,
		"did:web:example.com":        true,
		"at://alice.test":            true,
		"at://did:plc:x/not an nsid": false,
		"did:PLC:abc":                false,
		"https://example.com":        false,
		"":                           false,
	} {
		if got := IsTarget(s); got != want {
			t.Errorf("IsTarget(%q) = %v, want %v", s, got, want)
		}
	}
}

func BenchmarkExtract(b *testing.B) {
	v := cborOf(b, `{"$type":"app.bsky.feed.post","text":"a reply with a mention","createdAt":"2024-01-01T00:00:00Z","langs":["en"],
		"reply":{"root":{"cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm","uri":"`+post+`"},"parent":{"cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm","uri":"`+post2+`"}},
		"facets":[{"index":{"byteStart":0,"byteEnd":4},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"`+bob+`"}]}]}`)
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, err := Extract(v); err != nil {
			b.Fatal(err)
		}
	}
}
