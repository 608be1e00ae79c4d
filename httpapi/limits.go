package httpapi

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of Limits and Options.MaxStreams.
const (
	// DefaultReadHeaderTimeout bounds the reading of a request's headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds the reading of a whole request, body
	// included: a client that trickles its body is cut off.
	DefaultReadTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxConns bounds open connections, /stream included.
	DefaultMaxConns = 2048
	// DefaultMaxStreams bounds concurrent /stream connections. An idle
	// subscriber costs about 46 KB.
	DefaultMaxStreams = 1000
)

// Limits are the connection limits of the http.Server that serves the
// API. Zero values mean the defaults; a negative MaxConns means no limit.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default
	// DefaultReadHeaderTimeout (10s), never more than ReadTimeout.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. WebSocket
	// connections are not bound by it once upgraded. Default
	// DefaultReadTimeout (30s).
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections that send no request for
	// this long. Default DefaultIdleTimeout (2m).
	IdleTimeout time.Duration
	// MaxConns bounds the open connections of the listener wrapped by
	// LimitListener. Default DefaultMaxConns (2048).
	MaxConns int
}

func (l Limits) withDefaults() Limits {
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = DefaultReadTimeout
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	l.ReadHeaderTimeout = min(l.ReadHeaderTimeout, l.ReadTimeout)
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
	}
	return l
}

// NewHTTPServer returns an http.Server for h with the timeouts of l. It
// answers paths that are not in canonical form as CanonicalPaths does, and
// sets no WriteTimeout: streams answer for as long as their client reads,
// and a client that stops reading is cut off by the stream's own write
// timeout. Serve it on LimitListener(ln, l.MaxConns) to bound connections.
func NewHTTPServer(h http.Handler, l Limits, log *slog.Logger) *http.Server {
	l = l.withDefaults()
	srv := &http.Server{
		Handler:           CanonicalPaths(h),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		IdleTimeout:       l.IdleTimeout,
	}
	if log != nil {
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	return srv
}

// LimitListener returns a listener that keeps at most max connections
// open. A connection accepted beyond that is answered at once with
// 503 {"error":"TooManyConnections",...} and closed, so that the client
// learns why instead of waiting. max 0 means DefaultMaxConns; a negative
// max returns ln unchanged (no limit).
func LimitListener(ln net.Listener, max int) net.Listener {
	if max < 0 {
		return ln
	}
	if max == 0 {
		max = DefaultMaxConns
	}
	return &limitListener{Listener: ln, max: max}
}

type limitListener struct {
	net.Listener
	max int

	mu   sync.Mutex
	open int
}

// refusal is what a connection past the limit reads.
var refusal = func() []byte {
	body := `{"error":"TooManyConnections","message":"the server has as many connections open as it allows; retry later"}` + "\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		full := l.open >= l.max
		if !full {
			l.open++
		}
		l.mu.Unlock()
		if !full {
			return &countedConn{Conn: c, l: l}, nil
		}
		// A fresh socket's send buffer takes the short answer at once;
		// the deadline guards the accept loop against anything else.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(refusal)
		if tc, ok := c.(*net.TCPConn); ok {
			// Let the client read the answer instead of a reset.
			_ = tc.CloseWrite()
			_ = tc.SetLinger(1)
		}
		_ = c.Close()
	}
}

// Open returns how many connections are open.
func (l *limitListener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

type countedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// CanonicalPaths wraps h so that a request whose path is not in canonical
// form ("/repos/../stats", "//stats", "/stats/.") gets a JSON 404 instead
// of the HTML redirect that http.ServeMux answers: paths are matched as
// sent. NewHTTPServer applies it; Server.ServeHTTP does the same for the
// API's own paths.
func CanonicalPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuseUncleanPath(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refuseUncleanPath answers a request whose path path.Clean would change
// (a trailing slash aside) with a JSON 404, and reports whether it did.
func refuseUncleanPath(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if r.Method == http.MethodConnect || p == "" {
		return false
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	if clean == p {
		return false
	}
	writeError(w, http.StatusNotFound, "NotFound", "no endpoint at "+truncate(p, 200)+
		"; paths are matched as sent, without resolving dot segments or double slashes (did you mean "+truncate(clean, 200)+"?)")
	return true
}
