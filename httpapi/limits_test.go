package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// serveLimited serves api with the given limits on a loopback port, the way
// examples/cistern does, until the test ends.
func serveLimited(t *testing.T, api http.Handler, l httpapi.Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewHTTPServer(api, l, quiet)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(httpapi.LimitListener(ln, l.MaxConns)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// readUntilClosed reads c until the server closes it, or fails t after
// limit; it returns what was read.
func readUntilClosed(t *testing.T, c net.Conn, limit time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(limit))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s; read %q", limit, b)
	}
	return string(b)
}

func TestNewHTTPServer_Defaults(t *testing.T) {
	srv := httpapi.NewHTTPServer(http.NotFoundHandler(), httpapi.Limits{}, nil)
	if srv.ReadHeaderTimeout != httpapi.DefaultReadHeaderTimeout || srv.ReadTimeout != httpapi.DefaultReadTimeout ||
		srv.IdleTimeout != httpapi.DefaultIdleTimeout || srv.WriteTimeout != 0 {
		t.Fatalf("timeouts %v %v %v %v", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.IdleTimeout, srv.WriteTimeout)
	}
	srv = httpapi.NewHTTPServer(http.NotFoundHandler(), httpapi.Limits{ReadTimeout: time.Second}, nil)
	if srv.ReadHeaderTimeout != time.Second {
		t.Fatalf("header timeout %v above the read timeout", srv.ReadHeaderTimeout)
	}
}

// A body sent a byte at a time, an idle keep-alive connection, and
// connections past the cap: each gets an answer or is closed, none is held.
func TestLimits_Connections(t *testing.T) {
	net0 := testnet.New(t)
	ix := openIndexer(t, net0, filter.Spec{})
	const tok = "tok"
	api := httpapi.New(ix, httpapi.Options{AdminToken: tok})
	addr := serveLimited(t, api, httpapi.Limits{ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxConns: 3})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("trickled body", func(t *testing.T) {
		c := dial()
		_, err := io.WriteString(c, "PUT /filter HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "+tok+
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
		if err != nil {
			t.Fatal(err)
		}
		// No more bytes: the server must give up on the body.
		got := readUntilClosed(t, c, 10*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 408") || !strings.Contains(got, `"RequestTimeout"`) {
			t.Fatalf("answer to a stalled body: %q", got)
		}
		if f := ix.Filter().Spec(); len(f.Collections)+len(f.DIDs) != 0 {
			t.Fatalf("the stalled request changed the filter: %+v", f)
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial()
		if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("health: %v %v", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		// Then nothing: the server closes the connection.
		readUntilClosed(t, c, 10*time.Second)
	})

	t.Run("past the cap", func(t *testing.T) {
		held := []net.Conn{dial(), dial(), dial()}
		// Each held connection is accepted (the server starts reading
		// it) before the next; a request half sent keeps it busy.
		for _, c := range held {
			if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		var got string
		waitFor(t, "a connection past the cap to be refused", func() bool {
			c := dial()
			got = readUntilClosed(t, c, 10*time.Second)
			return got != ""
		})
		if !strings.HasPrefix(got, "HTTP/1.1 503") || !strings.Contains(got, `"error":"TooManyConnections"`) || !strings.Contains(got, "Retry-After: 5") {
			t.Fatalf("refusal %q", got)
		}
		// The held connections time out (ReadTimeout), which frees room.
		for _, c := range held {
			readUntilClosed(t, c, 10*time.Second)
		}
		waitFor(t, "a new connection to be served", func() bool {
			resp, err := http.Get("http://" + addr + "/health")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	})
}

// /stream connections past Options.MaxStreams are refused with a JSON 503
// before the upgrade; closing one makes room.
func TestLimits_Streams(t *testing.T) {
	net := testnet.New(t)
	ix := openIndexer(t, net, filter.Spec{})
	api := serve(t, ix, httpapi.Options{MaxStreams: 2}).URL
	ws := "ws" + strings.TrimPrefix(api, "http") + "/stream"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var open []*websocket.Conn
	for range 2 {
		c, _, err := websocket.Dial(ctx, ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		open = append(open, c)
	}
	_, resp, err := websocket.Dial(ctx, ws, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third stream: %v %+v", err, resp)
	}
	if a := get(t, api+"/stream"); a.Status != http.StatusServiceUnavailable || a.errName() != "TooManyStreams" {
		t.Fatalf("third stream over plain HTTP: %d %s", a.Status, a.Body)
	}
	open[0].Close(websocket.StatusNormalClosure, "")
	waitFor(t, "room for a new stream", func() bool {
		c, _, err := websocket.Dial(ctx, ws, nil)
		if err != nil {
			return false
		}
		c.CloseNow()
		return true
	})
}
