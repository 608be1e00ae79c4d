package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// Subscriber opens subscriptions to the event log. *stream.Log implements
// it, and so does the root Indexer.
type Subscriber interface {
	Subscribe(ctx context.Context, opts stream.SubscribeOptions) (*stream.Subscription, error)
}

var _ Subscriber = (*stream.Log)(nil)

// StreamOptions configure StreamHandler. Zero values mean the defaults.
type StreamOptions struct {
	// PingInterval is how often the server pings the client; a client that
	// does not answer within WriteTimeout is disconnected. Default 30s.
	PingInterval time.Duration
	// WriteTimeout bounds the writing of one frame. A client that stops
	// reading is disconnected once the connection's buffers are full and a
	// write takes longer than this: the server never buffers for a slow
	// client beyond one subscription's bound (see stream.Options).
	// Default 10s.
	WriteTimeout time.Duration
	// OriginPatterns lists the host patterns of browser origins allowed to
	// connect besides the request's own host (see
	// websocket.AcceptOptions.OriginPatterns). Clients that send no Origin
	// header (anything but a browser) are always allowed.
	OriginPatterns []string
	// Logger receives connection failures. Default: discard.
	Logger *slog.Logger
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.PingInterval <= 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// StreamHandler serves the event stream over WebSocket, and over plain HTTP
// (newline-delimited JSON, or server-sent events) to a GET without an
// Upgrade header (see streamhttp.go for the plain forms):
//
//	GET /stream?cursor=N&collections=a.b.c,a.b.*&dids=did:plc:…&kinds=record,account&origin=live&fromOldest=true
//
// Without cursor the stream starts with the next new event; with cursor=N
// it replays every retained event after id N, then continues live; cursor=0
// replays the whole retained log. collections (NSID patterns), dids and
// kinds (record, identity, account, repo) are comma-separated lists, and may be
// repeated; origin is any (default), live or backfill. Identity and account
// events pass a collection filter.
//
// Each event is one text frame in the form of stream.AppendEventJSON. Bad
// parameters are answered before the upgrade with 400 and
// {"error":"InvalidRequest","message":"…"}. A cursor older than the
// retained log gets the frame
// {"type":"error","error":"OutdatedCursor","message":"…"} and the
// connection is closed, unless fromOldest=true is given: then the frame
// {"type":"info","info":{"name":"OutdatedCursor","message":"…"}} is sent and
// the stream continues from the oldest retained event (as it does if
// retention later overtakes a slow client). A cursor beyond the newest event
// gets an error frame FutureCursor. Messages the client sends are ignored.
//
// A GET without an Upgrade header (curl, a browser's EventSource) gets the
// same stream as a streamed 200 response, with the same parameters, cursor
// semantics and JSON objects:
//   - newline-delimited JSON (Content-Type application/x-ndjson), the
//     default: one object per line, as the WebSocket's text frames
//     (curl -N 'http://host/stream?cursor=0');
//   - server-sent events (Content-Type text/event-stream) when the Accept
//     header names text/event-stream: each object is the "data:" line of
//     one message, with "id:" set to the event id for events. An
//     EventSource that reconnects sends Last-Event-ID, which is the cursor
//     when the URL has none, so it resumes after the last event it got.
//
// When nothing was sent for PingInterval, a heartbeat goes out (NDJSON: the
// line {"type":"info","info":{"name":"Heartbeat","message":"…"}}; SSE: a
// comment line), so that proxies keep the response open and a client that
// went away is noticed. An outdated or future cursor is answered before the
// stream starts, with 400 and {"error":"OutdatedCursor"|"FutureCursor",
// "message":"…"}; when the subscription ends later (retention overtook a
// slow client, shutdown, a failure) an error object is the last line. A
// client that reads too slowly is disconnected when a write takes longer
// than WriteTimeout.
func StreamHandler(src Subscriber, opts StreamOptions) http.Handler {
	return &streamHandler{src: src, opts: opts.withDefaults(), closing: make(chan struct{})}
}

type streamHandler struct {
	src  Subscriber
	opts StreamOptions

	closing   chan struct{} // closed by closePlain
	closeOnce sync.Once
}

// streamError answers a request before the upgrade.
func streamError(w http.ResponseWriter, status int, name, message string) {
	b, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{name, message})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// parseStreamQuery turns the query parameters into subscribe options.
func parseStreamQuery(r *http.Request) (stream.SubscribeOptions, error) {
	q := r.URL.Query()
	var o stream.SubscribeOptions
	if v := q.Get("cursor"); v != "" {
		c, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return o, fmt.Errorf("cursor %q is not a non-negative integer", v)
		}
		o.Cursor = c
	} else if q.Has("cursor") {
		return o, errors.New("cursor is empty")
	} else {
		o.Live = true
	}
	list := func(name string) []string {
		var out []string
		for _, v := range q[name] {
			out = append(out, strings.Split(v, ",")...)
		}
		return out
	}
	o.Collections = list("collections")
	o.DIDs = list("dids")
	o.LinksTo = list("linksTo")
	for _, k := range list("kinds") {
		kind, err := stream.ParseKind(k)
		if err != nil {
			return o, fmt.Errorf("kinds: %q is not record, identity, account or repo", k)
		}
		o.Kinds = append(o.Kinds, kind)
	}
	origin, err := stream.ParseOrigin(q.Get("origin"))
	if err != nil {
		return o, fmt.Errorf("origin: %q is not any, live or backfill", q.Get("origin"))
	}
	o.Origin = origin
	if v := q.Get("fromOldest"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return o, fmt.Errorf("fromOldest %q is not a boolean", v)
		}
		o.FromOldest = b
	}
	return o, nil
}

func (h *streamHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		streamError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not allowed on "+r.URL.Path)
		return
	}
	opts, err := parseStreamQuery(r)
	if err == nil && !isWebSocketUpgrade(r) {
		err = lastEventCursor(r, &opts)
	}
	if err != nil {
		streamError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sub, err := h.src.Subscribe(ctx, opts)
	var frameErr, frameMsg string
	switch {
	case err == nil:
		defer sub.Close()
	case errors.Is(err, stream.ErrInvalidOptions):
		streamError(w, http.StatusBadRequest, "InvalidRequest", strings.TrimPrefix(err.Error(), stream.ErrInvalidOptions.Error()+": "))
		return
	case errors.Is(err, stream.ErrOutdatedCursor):
		frameErr, frameMsg = "OutdatedCursor", err.Error()+"; reconnect with a newer cursor, or with fromOldest=true"
	case errors.Is(err, stream.ErrFutureCursor):
		frameErr, frameMsg = "FutureCursor", err.Error()
	case errors.Is(err, stream.ErrClosed):
		streamError(w, http.StatusServiceUnavailable, "Unavailable", "the event log is closed")
		return
	default:
		h.opts.Logger.Error("stream: subscribe", "err", err)
		streamError(w, http.StatusInternalServerError, "InternalServerError", "subscribe failed")
		return
	}

	if !isWebSocketUpgrade(r) {
		h.servePlain(ctx, w, r, sub, frameErr, frameMsg) // see streamhttp.go
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: h.opts.OriginPatterns})
	if err != nil {
		return // Accept has answered the request
	}
	defer conn.CloseNow()
	if frameErr != "" {
		h.write(ctx, conn, stream.AppendErrorJSON(nil, frameErr, frameMsg))
		conn.Close(websocket.StatusPolicyViolation, frameErr)
		return
	}

	// Read (and discard) what the client sends, so that pongs and close
	// frames are handled; the context ends when the connection does.
	ctx = conn.CloseRead(ctx)

	var pinger sync.WaitGroup
	pinger.Add(1)
	go func() {
		defer pinger.Done()
		h.ping(ctx, cancel, conn)
	}()
	defer pinger.Wait()
	defer cancel()

	if code, reason := h.serve(ctx, conn, sub); code >= 0 {
		conn.Close(code, reason)
	}
}

// ping pings the client every PingInterval and ends the connection's
// context when a pong does not come back within WriteTimeout.
func (h *streamHandler) ping(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn) {
	t := time.NewTicker(h.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, h.opts.WriteTimeout)
		err := conn.Ping(pctx)
		pcancel()
		if err != nil {
			if ctx.Err() == nil {
				h.opts.Logger.Info("stream: client did not answer ping", "err", err)
			}
			cancel()
			return
		}
	}
}

// serve writes events until the subscription or the connection ends, and
// returns the close status to send (-1: none, the connection is gone).
func (h *streamHandler) serve(ctx context.Context, conn *websocket.Conn, sub *stream.Subscription) (websocket.StatusCode, string) {
	var buf []byte
	notice := func(n stream.Notice) bool {
		buf = stream.AppendNoticeJSON(buf[:0], n)
		return h.write(ctx, conn, buf)
	}
	for {
		select {
		case <-ctx.Done():
			return -1, ""
		case n := <-sub.Notices():
			if !notice(n) {
				return -1, ""
			}
		case ev, ok := <-sub.Events():
			if !ok {
				return h.ended(ctx, conn, sub.Err())
			}
			// A notice is queued before the first event after its gap.
			select {
			case n := <-sub.Notices():
				if !notice(n) {
					return -1, ""
				}
			default:
			}
			if !h.writeEvent(ctx, conn, &buf, ev) {
				return -1, ""
			}
		}
	}
}

func (h *streamHandler) writeEvent(ctx context.Context, conn *websocket.Conn, buf *[]byte, ev *store.Event) bool {
	return h.write(ctx, conn, h.renderEvent(buf, ev))
}

// renderEvent renders ev as the JSON object sent for it, in *buf.
func (h *streamHandler) renderEvent(buf *[]byte, ev *store.Event) []byte {
	b, err := stream.AppendEventJSON((*buf)[:0], ev)
	if err != nil {
		// A stored value that does not render as atproto JSON: the event
		// is still sent (a client must see no gap in ids), without the
		// value and with "recordError" saying why; the value stays
		// available as DAG-CBOR through the library and getRecord's cid.
		h.opts.Logger.Warn("stream: record value not rendered; sending the event without it", "id", ev.ID, "err", err)
		bare := *ev
		bare.Record = nil
		var berr error
		if b, berr = stream.AppendEventJSON((*buf)[:0], &bare); berr != nil {
			return unrenderableJSON(ev.ID, berr)
		}
		b = append(b[:len(b)-2], `,"recordError":`...)
		b = strconv.AppendQuote(b, err.Error())
		b = append(b, "}}"...)
	}
	*buf = b
	return b
}

// write sends one text frame within WriteTimeout. On failure the
// connection is closed by the websocket library.
func (h *streamHandler) write(ctx context.Context, conn *websocket.Conn, b []byte) bool {
	wctx, cancel := context.WithTimeout(ctx, h.opts.WriteTimeout)
	defer cancel()
	if err := conn.Write(wctx, websocket.MessageText, b); err != nil {
		if ctx.Err() == nil {
			h.opts.Logger.Info("stream: write failed, disconnecting", "err", err)
		}
		return false
	}
	return true
}

// ended sends the reason a subscription ended and picks the close status.
func (h *streamHandler) ended(ctx context.Context, conn *websocket.Conn, err error) (websocket.StatusCode, string) {
	switch {
	case err == nil || ctx.Err() != nil:
		return -1, ""
	case errors.Is(err, stream.ErrOutdatedCursor):
		h.write(ctx, conn, stream.AppendErrorJSON(nil, "OutdatedCursor",
			err.Error()+"; events this client had not read were pruned"))
		return websocket.StatusPolicyViolation, "OutdatedCursor"
	case errors.Is(err, stream.ErrClosed):
		return websocket.StatusGoingAway, "shutting down"
	default:
		h.opts.Logger.Error("stream: subscription failed", "err", err)
		h.write(ctx, conn, stream.AppendErrorJSON(nil, "InternalServerError", "the stream failed"))
		return websocket.StatusInternalError, "InternalServerError"
	}
}

// unrenderableJSON is the frame sent in place of an event that cannot be
// rendered at all (an unknown kind, a corrupt CID): its id, so that the
// client sees no gap, and the reason.
func unrenderableJSON(id uint64, err error) []byte {
	b := []byte(`{"id":`)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"type":"unrenderable","error":`...)
	b = strconv.AppendQuote(b, err.Error())
	return append(b, '}')
}
