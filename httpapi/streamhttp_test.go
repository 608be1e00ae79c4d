package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
)

// plainClient reads the plain-HTTP stream: NDJSON lines, or SSE messages.
type plainClient struct {
	resp *http.Response
	sc   *bufio.Scanner
	sse  bool
}

// openPlain GETs /stream+query without an Upgrade header, as curl would.
func (e *streamEnv) openPlain(t *testing.T, query string, header http.Header) *plainClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/stream"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return &plainClient{resp: resp, sc: sc, sse: strings.Contains(header.Get("Accept"), "text/event-stream")}
}

// next returns the next object and, for SSE, its id: line ("" when none).
// It fails the test after 10 s.
func (c *plainClient) next(t *testing.T) (frame, string) {
	t.Helper()
	type result struct {
		f   frame
		id  string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		var data string
		for c.sc.Scan() {
			line := c.sc.Text()
			if !c.sse {
				data = line
				break
			}
			switch {
			case line == "" && data != "":
				goto done
			case strings.HasPrefix(line, "id: "):
				r.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
	done:
		if data == "" {
			r.err = c.sc.Err()
			if r.err == nil {
				r.err = errEnded
			}
		} else {
			r.err = json.Unmarshal([]byte(data), &r.f)
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		return r.f, r.id
	case <-time.After(10 * time.Second):
		t.Fatal("no object within 10 s")
	}
	return frame{}, ""
}

var errEnded = errors.New("the stream ended")

func (c *plainClient) ids(t *testing.T, n int) []uint64 {
	t.Helper()
	var out []uint64
	for len(out) < n {
		f, id := c.next(t)
		if f.Type != "record" {
			continue
		}
		if c.sse && id != strconv.FormatUint(f.ID, 10) {
			t.Fatalf("SSE id: %q for event %d", id, f.ID)
		}
		out = append(out, f.ID)
	}
	return out
}

// curl can follow the stream: the same cursor and filters as the
// WebSocket, as newline-delimited JSON or server-sent events.
func TestStreamHandler_PlainHTTP(t *testing.T) {
	setup := func(t *testing.T) *streamEnv {
		e := newStreamEnv(t, stream.Options{PageSize: 2}, httpapi.StreamOptions{})
		e.append(t, 3, "did:plc:alice", "app.bsky.feed.post", 10)  // 1..3
		e.append(t, 2, "did:plc:bob", "app.bsky.graph.follow", 10) // 4, 5
		return e
	}
	for _, tc := range []struct {
		name, accept, contentType string
	}{
		{"ndjson", "", "application/x-ndjson"},
		{"ndjson for */*", "*/*", "application/x-ndjson"},
		{"sse", "text/event-stream", "text/event-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			h := http.Header{}
			if tc.accept != "" {
				h.Set("Accept", tc.accept)
			}
			c := e.openPlain(t, "?cursor=1&collections=app.bsky.feed.post,app.bsky.graph.follow&dids=did:plc:alice", h)
			if c.resp.StatusCode != http.StatusOK || c.resp.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("%d %s, want 200 %s", c.resp.StatusCode, c.resp.Header.Get("Content-Type"), tc.contentType)
			}
			if got := c.ids(t, 2); !slices.Equal(got, []uint64{2, 3}) {
				t.Fatalf("replay: %v, want [2 3]", got)
			}
			// Live events follow; the filter still applies.
			e.append(t, 1, "did:plc:bob", "app.bsky.feed.post", 1)           // 6
			last := e.append(t, 1, "did:plc:alice", "app.bsky.feed.post", 1) // 7
			f, _ := c.next(t)
			if f.ID != last || f.Type != "record" || f.Record.DID != "did:plc:alice" || len(f.Record.Record) == 0 {
				t.Fatalf("live: %+v, want event %d of alice with its value", f, last)
			}
		})
	}

	e := setup(t)
	e.append(t, 2, "did:plc:alice", "app.bsky.feed.post", 1) // 6, 7
	t.Run("sse resumes after Last-Event-ID", func(t *testing.T) {
		h := http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"4"}}
		c := e.openPlain(t, "", h)
		if got := c.ids(t, 3); !slices.Equal(got, []uint64{5, 6, 7}) {
			t.Fatalf("after Last-Event-ID 4: %v, want [5 6 7]", got)
		}
	})
	t.Run("the URL's cursor wins over Last-Event-ID", func(t *testing.T) {
		h := http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"4"}}
		c := e.openPlain(t, "?cursor=6", h)
		if got := c.ids(t, 1); !slices.Equal(got, []uint64{7}) {
			t.Fatalf("cursor=6: %v, want [7]", got)
		}
	})
	for _, tc := range []struct {
		query  string
		header http.Header
		name   string
	}{
		{"?cursor=abc", nil, "InvalidRequest"},
		{"?kinds=commit", nil, "InvalidRequest"},
		{"", http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"x"}}, "InvalidRequest"},
		{"?cursor=99", nil, "FutureCursor"},
	} {
		t.Run("refused "+tc.query+tc.header.Get("Last-Event-Id"), func(t *testing.T) {
			c := e.openPlain(t, tc.query, tc.header)
			var body struct{ Error, Message string }
			if err := json.NewDecoder(c.resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if c.resp.StatusCode != http.StatusBadRequest || body.Error != tc.name || body.Message == "" {
				t.Fatalf("%d %+v, want 400 %s", c.resp.StatusCode, body, tc.name)
			}
		})
	}
}

func TestStreamHandler_PlainHTTPCursors(t *testing.T) {
	e := newStreamEnv(t, stream.Options{MaxEvents: 5}, httpapi.StreamOptions{PingInterval: 50 * time.Millisecond})
	e.append(t, 20, "did:plc:alice", "app.bsky.feed.post", 1)
	if n, err := e.log.Prune(context.Background()); err != nil || n != 15 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	c := e.openPlain(t, "?cursor=3", nil)
	var body struct{ Error string }
	if err := json.NewDecoder(c.resp.Body).Decode(&body); err != nil || c.resp.StatusCode != http.StatusBadRequest || body.Error != "OutdatedCursor" {
		t.Fatalf("outdated cursor: %d %+v %v", c.resp.StatusCode, body, err)
	}

	c = e.openPlain(t, "?cursor=3&fromOldest=true", nil)
	if f, _ := c.next(t); f.Type != "info" || f.Info == nil || f.Info.Name != "OutdatedCursor" {
		t.Fatalf("first line %+v, want the OutdatedCursor notice", f)
	}
	if got := c.ids(t, 5); !slices.Equal(got, span(16, 20)) {
		t.Fatalf("got %v, want 16..20", got)
	}
	// An idle stream sends heartbeats.
	if f, _ := c.next(t); f.Type != "info" || f.Info == nil || f.Info.Name != "Heartbeat" {
		t.Fatalf("idle line %+v, want a Heartbeat notice", f)
	}
}

// The server's /stream answers curl too.
func TestServer_StreamPlainHTTP(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 3))
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{alice.DID().String()}})
	waitSynced(t, ix, alice.DID().String())
	e := &streamEnv{srv: serve(t, ix, httpapi.Options{})}
	c := e.openPlain(t, "?cursor=0&kinds=record", nil)
	for i := 0; i < 3; i++ {
		f, _ := c.next(t)
		if f.Type != "record" || f.Record.DID != alice.DID().String() || f.Record.Collection != posts {
			t.Fatalf("line %d: %+v, want one of alice's posts", i, f)
		}
	}
}

// http.Server.Shutdown does not wait for plain-HTTP streams when the
// Server's CloseStreams is registered: they end with an Unavailable line.
func TestServer_CloseStreamsOnShutdown(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 2))
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{alice.DID().String()}})
	waitSynced(t, ix, alice.DID().String())
	api := httpapi.New(ix, httpapi.Options{})
	srv := httptest.NewUnstartedServer(api)
	srv.Config.RegisterOnShutdown(api.CloseStreams)
	srv.Start()
	defer srv.Close()

	c := (&streamEnv{srv: srv}).openPlain(t, "?cursor=0&kinds=record", nil)
	if got := c.ids(t, 2); len(got) != 2 {
		t.Fatalf("replay %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Config.Shutdown(ctx) }()
	if f, _ := c.next(t); f.Type != "error" || f.Error != "Unavailable" {
		t.Fatalf("last line %+v, want an Unavailable error", f)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v (it waited for the stream)", err)
	}
}
