package firehose

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// cborMarshaler is what indigo's generated types implement.
type cborMarshaler interface{ MarshalCBOR(io.Writer) error }

// testCID is a dag-cbor CID over s.
func testCID(s string) lexutil.LexLink {
	sum := sha256.Sum256([]byte(s))
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		panic(err)
	}
	return lexutil.LexLink(cid.NewCidV1(cid.DagCBOR, mh))
}

func ptr[T any](v T) *T { return &v }

// encodeHeader encodes a frame header {op, t} (t omitted when empty).
func encodeHeader(op int64, t string) []byte {
	h := map[string]any{"op": op}
	if t != "" {
		h["t"] = t
	}
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	b, err := em.Marshal(h)
	if err != nil {
		panic(err)
	}
	return b
}

// marshalBody encodes an indigo type with its generated encoder.
func marshalBody(v cborMarshaler) []byte {
	var buf bytes.Buffer
	if err := v.MarshalCBOR(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// msgFrame builds a message frame (op 1) of kind t.
func msgFrame(t string, body cborMarshaler) []byte {
	return append(encodeHeader(1, t), marshalBody(body)...)
}

// errFrame builds an error frame (op -1).
func errFrame(name, message string) []byte {
	b, err := cbor.Marshal(map[string]string{"error": name, "message": message})
	if err != nil {
		panic(err)
	}
	return append(encodeHeader(-1, ""), b...)
}

// testCommit is a commit of seq in repo did with three ops and blocksLen
// bytes of (fake) CAR blocks.
func testCommit(seq int64, did string, blocksLen int) *comatproto.SyncSubscribeRepos_Commit {
	blocks := make([]byte, blocksLen)
	for i := range blocks {
		blocks[i] = byte(i * 7)
	}
	prev := testCID(fmt.Sprint("data", seq-1))
	return &comatproto.SyncSubscribeRepos_Commit{
		Blobs:  []lexutil.LexLink{},
		Blocks: blocks,
		Commit: testCID(fmt.Sprint("commit", seq)),
		Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
			{Action: "create", Path: "app.bsky.feed.post/3l3qo2vutsw2b", Cid: ptr(testCID("a"))},
			{Action: "update", Path: "app.bsky.actor.profile/self", Cid: ptr(testCID("b")), Prev: ptr(testCID("c"))},
			{Action: "delete", Path: "app.bsky.feed.like/3l3qo2vuowo2b", Prev: ptr(testCID("d"))},
		},
		PrevData: &prev,
		Repo:     did,
		Rev:      "3l3qo2vutsw2b",
		Seq:      seq,
		Since:    ptr("3l3qo2vuowo2b"),
		Time:     "2024-09-05T06:11:04.870Z",
	}
}

// commitFrame is the frame of testCommit(seq, did, 64).
func commitFrame(seq int64, did string) []byte {
	return msgFrame(KindCommit, testCommit(seq, did, 64))
}

// fakeHost is a subscribeRepos endpoint whose behaviour per connection is
// scripted by serve. It records the cursor of every connection ("" when
// absent).
type fakeHost struct {
	srv *httptest.Server

	mu      sync.Mutex
	cursors []string
}

// newFakeHost starts a host; serve runs for each connection (n counts from
// 0) and the connection is closed abruptly when it returns.
func newFakeHost(t *testing.T, serve func(ctx context.Context, c *websocket.Conn, n int, cursor int64)) *fakeHost {
	t.Helper()
	h := &fakeHost{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != subscribePath {
			http.NotFound(w, r)
			return
		}
		raw := r.URL.Query().Get("cursor")
		var cursor int64
		if raw != "" {
			var err error
			if cursor, err = strconv.ParseInt(raw, 10, 64); err != nil {
				http.Error(w, "bad cursor", http.StatusBadRequest)
				return
			}
		}
		h.mu.Lock()
		n := len(h.cursors)
		h.cursors = append(h.cursors, raw)
		h.mu.Unlock()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		serve(r.Context(), c, n, cursor)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fakeHost) Cursors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.cursors...)
}

// send writes binary frames, stopping at the first error.
func send(ctx context.Context, c *websocket.Conn, frames ...[]byte) error {
	for _, f := range frames {
		if err := c.Write(ctx, websocket.MessageBinary, f); err != nil {
			return err
		}
	}
	return nil
}

// noSleep replaces the client's sleep: it records durations and returns at
// once.
type noSleep struct {
	mu sync.Mutex
	ds []time.Duration
}

func (s *noSleep) install(c *Client) {
	c.sleep = func(ctx context.Context, d time.Duration) error {
		s.mu.Lock()
		s.ds = append(s.ds, d)
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *noSleep) durations() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}

func mustCBOR(v any) []byte {
	b, err := cbor.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
