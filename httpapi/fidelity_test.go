package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// rawField returns the raw JSON of one field of a JSON object.
func rawField(t *testing.T, obj []byte, name string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatalf("%s: %v", obj, err)
	}
	return m[name]
}

// Record values come out with their keys in DAG-CBOR order (shorter keys
// first), byte for byte as a PDS writes them, in getRecord, listRecords,
// listCollection and on /stream: not sorted alphabetically.
func TestRecordJSON_KeepsCBORKeyOrder(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test")
	did := alice.DID().String()
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{did}})
	waitSynced(t, ix, did)
	api := serve(t, ix, httpapi.Options{}).URL

	value, err := testnet.Value(map[string]any{
		"$type":     posts,
		"text":      "hello <world> & all",
		"createdAt": "2026-01-02T03:04:05.000Z",
		"langs":     []any{"en"},
		"embed": map[string]any{
			"$type":    "app.bsky.embed.external",
			"external": map[string]any{"uri": "https://example.com", "title": "t", "description": "d"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// DAG-CBOR orders map keys by length, then bytewise; a PDS renders
	// them in that order, and does not escape <, > or &.
	const want = `{"text":"hello <world> & all","$type":"app.bsky.feed.post","embed":{"$type":"app.bsky.embed.external",` +
		`"external":{"uri":"https://example.com","title":"t","description":"d"}},"langs":["en"],"createdAt":"2026-01-02T03:04:05.000Z"}`

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(api, "http")+"/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	rec, err := alice.CreateRecord(posts, value)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record", func() bool {
		n, _ := ix.CountRecords(ctx, did, posts)
		return n == 1
	})

	a := xrpc(t, api, "com.atproto.repo.getRecord", "repo", did, "collection", posts, "rkey", rec.RKey)
	if got := rawField(t, a.Body, "value"); !bytes.Equal(got, []byte(want)) {
		t.Errorf("getRecord value\n got %s\nwant %s", got, want)
	}
	for _, a := range []answer{
		xrpc(t, api, "com.atproto.repo.listRecords", "repo", did, "collection", posts),
		xrpc(t, api, "dev.cistern.listCollection", "collection", posts),
	} {
		var page struct{ Records []json.RawMessage }
		a.decode(t, &page)
		if len(page.Records) != 1 {
			t.Fatalf("page %s", a.Body)
		}
		if got := rawField(t, page.Records[0], "value"); !bytes.Equal(got, []byte(want)) {
			t.Errorf("listed value\n got %s\nwant %s", got, want)
		}
	}
	_, frame, err := conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := rawField(t, rawField(t, frame, "record"), "record"); !bytes.Equal(got, []byte(want)) {
		t.Errorf("/stream record\n got %s\nwant %s", got, want)
	}
}

// describeRepo serves the DID document as the PLC directory does, byte for
// byte (compacted): @context, alsoKnownAs even for a handle that does not
// verify, and the key in the document's own form.
func TestDescribeRepo_DIDDocAsResolved(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 1))
	did := alice.DID().String()
	// Handles are verified: alice.test cannot be (no DNS for .test), so
	// the rebuilt document used to lose alsoKnownAs.
	ix, err := cistern.Open(cistern.Config{
		Path: t.TempDir() + "/c.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(), Logger: quiet,
		Filter: filter.Spec{DIDs: []string{did}}, NoFirehose: true, NoCrawl: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	api := serve(t, ix, httpapi.Options{}).URL

	resp, err := http.Get(net.PLCURL() + "/" + did)
	if err != nil {
		t.Fatal(err)
	}
	plc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var want bytes.Buffer
	if err := json.Compact(&want, plc); err != nil {
		t.Fatalf("PLC document %s: %v", plc, err)
	}
	if !bytes.Contains(want.Bytes(), []byte(`"@context"`)) || !bytes.Contains(want.Bytes(), []byte(`"alsoKnownAs":["at://alice.test"]`)) {
		t.Fatalf("the PLC document lacks what the test is about: %s", want.Bytes())
	}

	a := xrpc(t, api, "com.atproto.repo.describeRepo", "repo", did)
	if a.Status != http.StatusOK {
		t.Fatalf("describeRepo: %d %s", a.Status, a.Body)
	}
	if got := rawField(t, a.Body, "didDoc"); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("didDoc\n got %s\nwant %s", got, want.Bytes())
	}
	var d struct {
		Handle          string
		HandleIsCorrect bool
	}
	a.decode(t, &d)
	if d.HandleIsCorrect {
		t.Fatalf("an unverifiable handle reported correct: %s", a.Body)
	}
}
