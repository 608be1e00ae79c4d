package firehose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/coder/websocket"
)

// subscribePath is the XRPC path of the stream.
const subscribePath = "/xrpc/com.atproto.sync.subscribeRepos"

// Defaults of Options.
const (
	DefaultMaxFrameSize = 4 << 20
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = time.Minute
	DefaultDialTimeout  = 30 * time.Second
)

var (
	// ErrFrameTooLarge is returned (wrapped) by Client.Run when a frame
	// exceeds Options.MaxFrameSize. Run stops rather than reconnect: the host
	// would send the same frame again. The error names the last sequence
	// number handled, from which the caller may decide how to go on.
	ErrFrameTooLarge = errors.New("firehose: frame exceeds size limit")
	// ErrInvalidCursor is returned by Client.Run for a negative cursor.
	ErrInvalidCursor = errors.New("firehose: invalid cursor")
	// ErrRunning is returned by Client.Run when another Run of the same
	// Client has not returned yet.
	ErrRunning = errors.New("firehose: client is already running")
)

// Handler handles one message. Client.Run calls it serially, in stream
// order; Dispatcher.Dispatch has this type, so a Dispatcher can be handed to
// Client.Run directly.
type Handler func(ctx context.Context, m *Message) error

// Options configure a Client. Zero values mean the documented default.
type Options struct {
	// URL is the relay or PDS to follow: a base URL such as
	// https://bsky.network, or the full stream URL. http and https are
	// turned into ws and wss. When the path does not already end in
	// /xrpc/com.atproto.sync.subscribeRepos, that path is appended.
	// Required.
	URL string
	// Name names the source in logs. Default: the URL's host.
	Name string
	// MaxFrameSize is the largest frame, in bytes, the client reads; a larger
	// frame ends Run with ErrFrameTooLarge. Default 4 MiB.
	MaxFrameSize int64
	// MinBackoff and MaxBackoff bound the wait between reconnects. The n-th
	// consecutive failed attempt waits a random duration in [d/2, d] where
	// d = min(MinBackoff·2ⁿ, MaxBackoff). The count starts over after a
	// connection that delivered at least one message. Defaults 1s and 1m.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// DialTimeout bounds the WebSocket handshake. Default 30s.
	DialTimeout time.Duration
	// IdleTimeout, when positive, drops and re-establishes a connection on
	// which no frame arrived for that long (a silent half-open connection
	// would otherwise stall forever). Default 0: no idle timeout, since a
	// quiet PDS may legitimately send nothing for hours.
	IdleTimeout time.Duration
	// HTTPClient performs the handshake. Its Timeout, if set, bounds the
	// handshake only. Default http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives connection events, skipped frames and upstream
	// errors. Default: discard.
	Logger *slog.Logger
	// OnInfo, if set, is called with every #info message, before the
	// handler sees it, from the goroutine running Run. OutdatedCursor infos
	// are also logged at warn level.
	OnInfo func(info *comatproto.SyncSubscribeRepos_Info)
}

func (o Options) withDefaults() Options {
	if o.MaxFrameSize <= 0 {
		o.MaxFrameSize = DefaultMaxFrameSize
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Stats are cumulative counters of a Client, across all its Runs.
type Stats struct {
	// Connections counts successful handshakes.
	Connections int64
	// Reconnects counts the times Run waited to connect again because a
	// connection ended or could not be opened (failed dials included).
	Reconnects int64
	// Connected reports whether a connection is open now.
	Connected bool
	// Messages counts messages handed to the handler.
	Messages int64
	// Duplicates counts messages dropped because their sequence number was
	// not above the last one received (repeats after a reconnect).
	Duplicates int64
	// Unknown counts frames of an unknown op or kind, skipped.
	Unknown int64
	// Malformed counts frames that failed to decode, skipped.
	Malformed int64
	// ErrorFrames counts error frames (op -1) received.
	ErrorFrames int64
	// LastSeq is the sequence number of the last message handled.
	LastSeq int64
}

// Client follows one subscribeRepos stream. Create it with New. Its methods
// are safe for concurrent use, but only one Run may be active at a time.
type Client struct {
	opts    Options
	url     *url.URL
	log     *slog.Logger
	running atomic.Bool

	// sleep and rnd are replaced in tests.
	sleep func(ctx context.Context, d time.Duration) error
	rnd   func(n int64) int64

	connections, reconnects, messages, duplicates, unknown, malformed, errorFrames, lastSeq atomic.Int64

	connected atomic.Bool // a connection is open
}

// New checks opts and returns a Client. It does not connect.
func New(opts Options) (*Client, error) {
	opts = opts.withDefaults()
	u, err := streamURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = u.Host
	}
	return &Client{
		opts:  opts,
		url:   u,
		log:   opts.Logger.With("source", opts.Name),
		sleep: sleep,
		rnd:   rand.Int64N,
	}, nil
}

// streamURL turns a base or stream URL into the WebSocket stream URL.
func streamURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("firehose: url %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return nil, fmt.Errorf("firehose: url %q: scheme must be http, https, ws or wss", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("firehose: url %q: no host", raw)
	}
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, subscribePath) {
		p += subscribePath
	}
	u.Path, u.RawPath, u.Fragment = p, "", ""
	return u, nil
}

// URL returns the stream URL the client connects to, without cursor.
func (c *Client) URL() string { return c.url.String() }

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Connections: c.connections.Load(),
		Reconnects:  c.reconnects.Load(),
		Connected:   c.connected.Load(),
		Messages:    c.messages.Load(),
		Duplicates:  c.duplicates.Load(),
		Unknown:     c.unknown.Load(),
		Malformed:   c.malformed.Load(),
		ErrorFrames: c.errorFrames.Load(),
		LastSeq:     c.lastSeq.Load(),
	}
}

// Run follows the stream until ctx ends or handle fails.
//
// It connects with ?cursor=N when cursor > 0, so that the first message is
// the one after N; cursor 0 starts at the live tip. It decodes each frame and
// calls handle serially, in frame order, from its own goroutine, with ctx.
// Messages whose sequence number is not above the last one received (or
// above cursor) are dropped and counted as Duplicates; frames of unknown
// kind and malformed frames are skipped, counted and logged.
//
// When the connection drops, a read fails, or the host sends an error frame
// other than FutureCursor, Run reconnects after a backoff (see Options) with
// the cursor set to the last sequence number handled, so no message is
// missed or repeated. Starting live (cursor 0), messages sent before the
// first one is received cannot be recovered across a reconnect.
//
// Run returns:
//   - ctx.Err() once ctx ends (context.Canceled or DeadlineExceeded);
//   - the handler's error, unwrapped, as soon as handle returns one; the
//     failed message is the one after Stats().LastSeq;
//   - an *UpstreamError matching ErrFutureCursor if the host says the
//     cursor is ahead of its stream;
//   - an error wrapping ErrFrameTooLarge for a frame over MaxFrameSize;
//   - ErrInvalidCursor or ErrRunning for bad calls.
func (c *Client) Run(ctx context.Context, cursor int64, handle Handler) error {
	if cursor < 0 {
		return fmt.Errorf("%w: %d", ErrInvalidCursor, cursor)
	}
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	last := cursor
	attempt := 0
	for {
		delivered, fatal, err := c.runConn(ctx, &last, handle)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fatal {
			return err
		}
		if delivered {
			attempt = 0
		}
		d := backoff(attempt, c.opts.MinBackoff, c.opts.MaxBackoff, c.rnd)
		attempt++
		c.reconnects.Add(1)
		c.log.Warn("firehose: disconnected, will reconnect", "err", err, "cursor", last, "backoff", d)
		if err := c.sleep(ctx, d); err != nil {
			return err
		}
	}
}

// runConn runs one connection from *last. It reports whether the connection
// delivered a message, and whether err must end Run.
func (c *Client) runConn(ctx context.Context, last *int64, handle Handler) (delivered, fatal bool, err error) {
	u := *c.url
	q := u.Query()
	if *last > 0 {
		q.Set("cursor", strconv.FormatInt(*last, 10))
	} else {
		q.Del("cursor")
	}
	u.RawQuery = q.Encode()

	dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	conn, _, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{HTTPClient: c.opts.HTTPClient})
	cancel()
	if err != nil {
		return false, false, fmt.Errorf("firehose: dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(c.opts.MaxFrameSize)
	c.connections.Add(1)
	c.connected.Store(true)
	defer c.connected.Store(false)
	c.log.Info("firehose: connected", "cursor", *last)

	for {
		typ, data, err := c.read(ctx, conn)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				return delivered, true, fmt.Errorf("%w: frame after seq %d is larger than %d bytes", ErrFrameTooLarge, *last, c.opts.MaxFrameSize)
			}
			return delivered, false, fmt.Errorf("firehose: read: %w", err)
		}
		if typ != websocket.MessageBinary {
			c.malformed.Add(1)
			c.log.Error("firehose: skipped frame", "err", "text message", "after_seq", *last)
			continue
		}
		m, err := DecodeFrame(data)
		if err != nil {
			var ue *UpstreamError
			switch {
			case errors.As(err, &ue):
				c.errorFrames.Add(1)
				if errors.Is(ue, ErrFutureCursor) {
					return delivered, true, ue
				}
				conn.Close(websocket.StatusNormalClosure, "")
				return delivered, false, ue
			case errors.Is(err, ErrUnknownKind):
				c.unknown.Add(1)
				c.log.Debug("firehose: skipped frame", "err", err, "after_seq", *last)
			default:
				c.malformed.Add(1)
				c.log.Error("firehose: skipped frame", "err", err, "after_seq", *last, "bytes", len(data))
			}
			continue
		}
		delivered = true
		if m.Seq > 0 && m.Seq <= *last {
			c.duplicates.Add(1)
			continue
		}
		if m.Info != nil {
			if m.Info.Name == NameOutdatedCursor {
				c.log.Warn("firehose: outdated cursor, messages were missed", "cursor", *last, "message", deref(m.Info.Message))
			} else {
				c.log.Info("firehose: info", "name", m.Info.Name, "message", deref(m.Info.Message))
			}
			if c.opts.OnInfo != nil {
				c.opts.OnInfo(m.Info)
			}
		}
		if err := handle(ctx, m); err != nil {
			return delivered, true, err
		}
		c.messages.Add(1)
		if m.Seq > 0 {
			*last = m.Seq
			c.lastSeq.Store(m.Seq)
		}
	}
}

// read reads one message, bounded by IdleTimeout when set.
func (c *Client) read(ctx context.Context, conn *websocket.Conn) (websocket.MessageType, []byte, error) {
	if c.opts.IdleTimeout <= 0 {
		return conn.Read(ctx)
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.IdleTimeout)
	defer cancel()
	return conn.Read(rctx)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
