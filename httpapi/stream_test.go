package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

// streamEnv is a store, a Log and a test server running StreamHandler.
type streamEnv struct {
	st   *boltstore.DB
	log  *stream.Log
	srv  *httptest.Server
	done chan struct{} // receives when a handler call returns
	n    int
}

func newStreamEnv(t *testing.T, logOpts stream.Options, opts httpapi.StreamOptions) *streamEnv {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "cistern.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	e := &streamEnv{st: st, log: stream.New(st, logOpts), done: make(chan struct{}, 16)}
	h := httpapi.StreamHandler(e.log, opts)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		e.done <- struct{}{}
	}))
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.srv.Close()
		e.log.Close()
		st.Close()
	})
	return e
}

var streamEncMode, _ = cbor.CoreDetEncOptions().EncMode()

// appendStreamEvents appends n record events of the given DID and
// collection, with a text of textLen bytes, and notifies the Log.
func (e *streamEnv) append(t *testing.T, n int, did, collection string, textLen int) uint64 {
	t.Helper()
	var newest uint64
	err := e.st.Update(context.Background(), func(tx store.Tx) error {
		for range n {
			e.n++
			value, err := streamEncMode.Marshal(map[string]any{
				"$type": collection,
				"text":  fmt.Sprintf("%d %s", e.n, strings.Repeat("x", textLen)),
			})
			if err != nil {
				return err
			}
			c, err := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: multihash.SHA2_256, MhLength: -1}.Sum(value)
			if err != nil {
				return err
			}
			ev := &store.Event{Kind: store.KindRecord, Live: true, DID: did, Rev: "3l" + fmt.Sprint(e.n),
				Time: time.Now(), Collection: collection, RKey: fmt.Sprintf("3k%d", e.n),
				Action: store.ActionCreate, CID: c.Bytes(), Record: value}
			if err := tx.AppendEvent(ev); err != nil {
				return err
			}
			newest = ev.ID
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.log.Notify(newest)
	return newest
}

func (e *streamEnv) dial(t *testing.T, query string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/stream"+query, nil)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial %s: %v %s", query, err, body)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

// frame is any frame of the stream, decoded.
type frame struct {
	ID     uint64 `json:"id"`
	Type   string `json:"type"`
	Record *struct {
		DID        string          `json:"did"`
		Collection string          `json:"collection"`
		Action     string          `json:"action"`
		CID        string          `json:"cid"`
		Record     json.RawMessage `json:"record"`
	} `json:"record"`
	Info *struct {
		Name    string `json:"name"`
		Message string `json:"message"`
	} `json:"info"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

func readFrame(t *testing.T, conn *websocket.Conn) (frame, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	if typ != websocket.MessageText {
		t.Fatalf("frame type %v, want text", typ)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	return f, nil
}

// readIDs reads event frames until one with id `until`.
func readIDs(t *testing.T, conn *websocket.Conn, until uint64) []uint64 {
	t.Helper()
	var ids []uint64
	for {
		f, err := readFrame(t, conn)
		if err != nil {
			t.Fatalf("read after %v: %v", ids, err)
		}
		if f.Type != "record" {
			t.Fatalf("unexpected frame %+v", f)
		}
		ids = append(ids, f.ID)
		if f.ID >= until {
			return ids
		}
	}
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestStreamHandler_ReplayThenLive(t *testing.T) {
	e := newStreamEnv(t, stream.Options{PageSize: 2}, httpapi.StreamOptions{})
	e.append(t, 5, "did:plc:alice", "app.bsky.feed.post", 10)

	conn := e.dial(t, "?cursor=2")
	if got := readIDs(t, conn, 5); !slices.Equal(got, span(3, 5)) {
		t.Fatalf("replay: got %v, want 3..5", got)
	}
	e.append(t, 3, "did:plc:alice", "app.bsky.feed.post", 10)
	if got := readIDs(t, conn, 8); !slices.Equal(got, span(6, 8)) {
		t.Fatalf("live: got %v, want 6..8", got)
	}

	// Without a cursor, only new events.
	live := e.dial(t, "")
	e.append(t, 2, "did:plc:alice", "app.bsky.feed.post", 10)
	if got := readIDs(t, live, 10); !slices.Equal(got, span(9, 10)) {
		t.Fatalf("no cursor: got %v, want 9..10", got)
	}

	// The record frames carry the value in JSON.
	whole := e.dial(t, "?cursor=0")
	f, err := readFrame(t, whole)
	if err != nil {
		t.Fatal(err)
	}
	var value map[string]any
	if err := json.Unmarshal(f.Record.Record, &value); err != nil || value["$type"] != "app.bsky.feed.post" ||
		!strings.HasPrefix(value["text"].(string), "1 ") || f.ID != 1 || !strings.HasPrefix(f.Record.CID, "bafyrei") {
		t.Fatalf("first frame %+v value %v (%v)", f, value, err)
	}
}

func TestStreamHandler_Filters(t *testing.T) {
	e := newStreamEnv(t, stream.Options{}, httpapi.StreamOptions{})
	e.append(t, 2, "did:plc:alice", "app.bsky.feed.post", 1)   // 1, 2
	e.append(t, 2, "did:plc:bob", "app.bsky.graph.follow", 1)  // 3, 4
	e.append(t, 1, "did:plc:alice", "app.bsky.graph.block", 1) // 5
	last := e.append(t, 1, "did:plc:bob", "app.bsky.feed.like", 1)

	tests := []struct {
		query string
		want  []uint64
	}{
		{"?cursor=0&collections=app.bsky.graph.*", []uint64{3, 4, 5}},
		{"?cursor=0&dids=did:plc:bob", []uint64{3, 4, 6}},
		{"?cursor=0&collections=app.bsky.feed.post,app.bsky.feed.like", []uint64{1, 2, 6}},
		{"?cursor=0&collections=app.bsky.feed.post&collections=app.bsky.graph.block", []uint64{1, 2, 5}},
		{"?cursor=0&dids=did:plc:alice&collections=app.bsky.graph.*&kinds=record&origin=live", []uint64{5}},
		{"?cursor=0&kinds=identity,account", nil},
		{"?cursor=0&origin=backfill", nil},
		{"?cursor=0&linksTo=did:plc:nobody", nil}, // the posts link to nothing
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			conn := e.dial(t, tt.query)
			// Read until nothing more comes within a short window.
			var got []uint64
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				_, b, err := conn.Read(ctx)
				cancel()
				if err != nil {
					break // nothing more within the window
				}
				var f frame
				if err := json.Unmarshal(b, &f); err != nil {
					t.Fatal(err)
				}
				got = append(got, f.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v (log up to %d)", got, tt.want, last)
			}
		})
	}
}

func TestStreamHandler_BadParameters(t *testing.T) {
	e := newStreamEnv(t, stream.Options{}, httpapi.StreamOptions{})
	e.append(t, 1, "did:plc:alice", "app.bsky.feed.post", 1)
	tests := []struct {
		query, mention string
	}{
		{"?cursor=abc", "cursor"},
		{"?cursor=-1", "cursor"},
		{"?cursor=", "cursor"},
		{"?collections=app.bsky.*.post", "app.bsky.*.post"},
		{"?collections=app.bsky.feed.post,", "empty"},
		{"?dids=alice", "alice"},
		{"?linksTo=https://example.com", "https://example.com"},
		{"?kinds=commit", "commit"},
		{"?origin=historical", "historical"},
		{"?fromOldest=maybe", "fromOldest"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			// A real WebSocket handshake is refused before the upgrade.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/stream"+tt.query, nil)
			if err == nil {
				t.Fatal("dial succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("response %v, want 400", resp)
			}
			var body struct{ Error, Message string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if body.Error != "InvalidRequest" || !strings.Contains(body.Message, tt.mention) {
				t.Fatalf("body %+v, want InvalidRequest mentioning %q", body, tt.mention)
			}
		})
	}
	resp, err := http.Post(e.srv.URL+"/stream", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d, want 405", resp.StatusCode)
	}
}

func TestStreamHandler_Cursors(t *testing.T) {
	e := newStreamEnv(t, stream.Options{MaxEvents: 5}, httpapi.StreamOptions{})
	e.append(t, 20, "did:plc:alice", "app.bsky.feed.post", 1)
	if n, err := e.log.Prune(context.Background()); err != nil || n != 15 {
		t.Fatalf("Prune = %d, %v", n, err)
	}

	t.Run("outdated", func(t *testing.T) {
		conn := e.dial(t, "?cursor=3")
		f, err := readFrame(t, conn)
		if err != nil || f.Type != "error" || f.Error != "OutdatedCursor" || f.Message == "" {
			t.Fatalf("frame %+v, %v; want an OutdatedCursor error frame", f, err)
		}
		if _, err := readFrame(t, conn); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("after the error frame: %v, want close 1008", err)
		}
	})
	t.Run("outdated from oldest", func(t *testing.T) {
		conn := e.dial(t, "?cursor=3&fromOldest=true")
		f, err := readFrame(t, conn)
		if err != nil || f.Type != "info" || f.Info == nil || f.Info.Name != "OutdatedCursor" {
			t.Fatalf("frame %+v, %v; want an OutdatedCursor info frame", f, err)
		}
		if got := readIDs(t, conn, 20); !slices.Equal(got, span(16, 20)) {
			t.Fatalf("got %v, want 16..20", got)
		}
	})
	t.Run("future", func(t *testing.T) {
		conn := e.dial(t, "?cursor=21")
		f, err := readFrame(t, conn)
		if err != nil || f.Type != "error" || f.Error != "FutureCursor" {
			t.Fatalf("frame %+v, %v; want a FutureCursor error frame", f, err)
		}
	})
}

// A client that never reads is disconnected once writes stall for
// WriteTimeout; the server does not buffer for it.
func TestStreamHandler_SlowClientDisconnected(t *testing.T) {
	e := newStreamEnv(t, stream.Options{PageSize: 8, Buffer: 4},
		httpapi.StreamOptions{WriteTimeout: 200 * time.Millisecond})
	for range 10 {
		e.append(t, 20, "did:plc:alice", "app.bsky.feed.post", 60_000) // 12 MB in all
	}
	conn := e.dial(t, "?cursor=0")
	_ = conn // never read
	select {
	case <-e.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler is still serving a client that does not read")
	}
}

// A client that keeps reading stays connected through pings.
func TestStreamHandler_PingKeepsReaderConnected(t *testing.T) {
	e := newStreamEnv(t, stream.Options{}, httpapi.StreamOptions{PingInterval: 10 * time.Millisecond, WriteTimeout: 2 * time.Second})
	conn := e.dial(t, "")
	ctx := conn.CloseRead(context.Background()) // answers pings
	time.Sleep(100 * time.Millisecond)
	select {
	case <-ctx.Done():
		t.Fatal("connection closed")
	case <-e.done:
		t.Fatal("handler returned")
	default:
	}
}

// A client that stops answering pings (it never reads, so its library
// never sends a pong) is disconnected within PingInterval + WriteTimeout,
// even with nothing to send it.
func TestStreamHandler_UnansweredPingDisconnects(t *testing.T) {
	e := newStreamEnv(t, stream.Options{}, httpapi.StreamOptions{PingInterval: 20 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
	_ = e.dial(t, "") // live only, nothing to send; never read
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a client that answers no ping is still connected")
	}
}

// TestStreamHandler_UnrenderableValueLeavesNoGap: an event whose stored
// value is not valid atproto data (here a CBOR map with an integer key) is
// still sent, without the value and with "recordError", so that a client
// sees every id.
func TestStreamHandler_UnrenderableValueLeavesNoGap(t *testing.T) {
	e := newStreamEnv(t, stream.Options{}, httpapi.StreamOptions{})
	first := e.append(t, 1, "did:plc:aaaa", "app.bsky.feed.post", 4)
	bad, err := streamEncMode.Marshal(map[int]string{1: "not an atproto object"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: multihash.SHA2_256, MhLength: -1}.Sum(bad)
	if err != nil {
		t.Fatal(err)
	}
	var badID uint64
	if err := e.st.Update(context.Background(), func(tx store.Tx) error {
		ev := &store.Event{Kind: store.KindRecord, Live: true, DID: "did:plc:aaaa", Rev: "3lbad", Time: time.Now(),
			Collection: "app.bsky.feed.post", RKey: "3kbad", Action: store.ActionCreate, CID: c.Bytes(), Record: bad}
		err := tx.AppendEvent(ev)
		badID = ev.ID
		return err
	}); err != nil {
		t.Fatal(err)
	}
	last := e.append(t, 1, "did:plc:aaaa", "app.bsky.feed.post", 4)

	conn := e.dial(t, "?cursor=0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for want := first; want <= last; want++ {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read event %d: %v", want, err)
		}
		var f struct {
			ID     uint64 `json:"id"`
			Record struct {
				CID         string          `json:"cid"`
				Record      json.RawMessage `json:"record"`
				RecordError string          `json:"recordError"`
			} `json:"record"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		if f.ID != want {
			t.Fatalf("got event %d, want %d: a gap", f.ID, want)
		}
		if want == badID {
			if f.Record.Record != nil || f.Record.RecordError == "" || f.Record.CID != c.String() {
				t.Fatalf("unrenderable event sent as %s", b)
			}
		} else if f.Record.Record == nil || f.Record.RecordError != "" {
			t.Fatalf("event %d sent as %s", want, b)
		}
	}
}
