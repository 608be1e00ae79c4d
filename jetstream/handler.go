package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern/internal/wsserve"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// Subscriber opens subscriptions to the event log. *stream.Log implements
// it, and so does the root Indexer.
type Subscriber interface {
	Subscribe(ctx context.Context, opts stream.SubscribeOptions) (*stream.Subscription, error)
}

var _ Subscriber = (*stream.Log)(nil)

// Options configure a Handler. Zero values mean the defaults.
type Options struct {
	// PingInterval is how often the server pings the client; a client that
	// does not answer within WriteTimeout is disconnected. Default 30s.
	PingInterval time.Duration
	// WriteTimeout bounds the writing of one message. A client that stops
	// reading is disconnected once the connection's buffers are full and a
	// write takes longer than this. Default 10s.
	WriteTimeout time.Duration
	// OriginPatterns lists the host patterns of browser origins allowed to
	// connect besides the request's own host (see
	// websocket.AcceptOptions.OriginPatterns). Clients that send no Origin
	// header are always allowed.
	OriginPatterns []string
	// Logger receives connection failures. Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options { return Options(wsserve.Options(o).WithDefaults()) }

// Handler serves Jetstream's /subscribe WebSocket over cistern's event log
// (see the package documentation for the protocol). It is safe for
// concurrent use; each connection runs in the request's goroutine plus a
// reader and a pinger it owns, all ended when the connection ends. Handler
// is also a prometheus.Collector of its counters.
type Handler struct {
	src     Subscriber
	st      store.Store
	opts    Options
	comp    *Compressor
	compErr error
	frames  *frameCache
	m       *metrics
}

// The frame cache holds the messages of the newest events, shared by the
// connections that send them: 4,096 events, 16 MiB at most.
const (
	cacheEntries = 4096
	cacheBytes   = 16 << 20
)

var _ http.Handler = (*Handler)(nil)

// New returns a Handler reading events through src (for a host, its
// Indexer) and resolving cursors in st, the store src reads (the
// Indexer's Store()). It starts no goroutine.
func New(src Subscriber, st store.Store, opts Options) *Handler {
	h := &Handler{src: src, st: st, opts: opts.withDefaults(), m: newMetrics(),
		frames: newFrameCache(cacheEntries, cacheBytes)}
	h.comp, h.compErr = NewCompressor()
	return h
}

// errorJSON answers a request before the upgrade.
func errorJSON(w http.ResponseWriter, status int, name, message string) {
	b, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{name, message})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// ServeHTTP upgrades a GET /subscribe request to a WebSocket and streams
// events until the client or the log goes away.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		errorJSON(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not allowed on "+r.URL.Path)
		return
	}
	req, err := ParseRequest(r)
	if err != nil {
		errorJSON(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	if req.Compress && h.compErr != nil {
		h.opts.Logger.Error("jetstream: compression unavailable", "err", h.compErr)
		errorJSON(w, http.StatusInternalServerError, "InternalServerError", "compression is unavailable")
		return
	}
	start, outdated, err := h.startPosition(r.Context(), req)
	if err != nil {
		if errors.Is(err, store.ErrClosed) {
			errorJSON(w, http.StatusServiceUnavailable, "Unavailable", "the event log is closed")
			return
		}
		h.opts.Logger.Error("jetstream: resolve cursor", "err", err)
		errorJSON(w, http.StatusInternalServerError, "InternalServerError", "cursor lookup failed")
		return
	}
	if outdated {
		h.m.outdated.Inc()
	}

	conn, err := wsserve.Options(h.opts).Accept(w, r)
	if err != nil {
		return // Accept has answered the request
	}
	defer conn.CloseNow()
	conn.SetReadLimit(MaxClientMessageBytes)
	h.m.subscribers.Inc()
	defer h.m.subscribers.Dec()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	updates := make(chan *Filter, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		h.read(ctx, cancel, conn, updates)
	}()
	go func() {
		defer wg.Done()
		wsserve.Options(h.opts).KeepAlive(ctx, cancel, conn, "jetstream")
	}()
	defer wg.Wait()
	defer cancel()

	if code, reason := h.serve(ctx, conn, req, start, updates); code >= 0 {
		conn.Close(code, reason)
	}
}

// startPosition resolves the request's cursor to the id of the last event
// the client has seen: the stream starts after it. outdated reports a
// cursor older than the retained log, moved to the oldest retained event.
func (h *Handler) startPosition(ctx context.Context, req Request) (pos uint64, outdated bool, err error) {
	err = h.st.View(ctx, func(tx store.ReadTx) error {
		oldest, newest, err := tx.EventBounds()
		if err != nil {
			return err
		}
		pos = newest // live: after the newest event
		if !req.HasCursor || req.Cursor == 1<<63-1 {
			return nil
		}
		// The first event with time_us > cursor.
		id, err := tx.EventAtTime(time.UnixMicro(req.Cursor + 1))
		switch {
		case err != nil:
			return err
		case id == 0: // none yet: a cursor in the future is live only
		case oldest == 0 || id < oldest:
			outdated = true
			if oldest != 0 {
				pos = oldest - 1
			}
		default:
			pos = id - 1
		}
		return nil
	})
	return pos, outdated, err
}

// read handles what the client sends: options_update replaces the filter
// (handed to serve through updates, newest first); an invalid one closes
// the connection with its reason. It ends the connection's context when the
// connection ends.
func (h *Handler) read(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn, updates chan *Filter) {
	defer cancel()
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		f, err := ParseClientMessage(b)
		if err != nil {
			h.m.invalidUpdates.Inc()
			conn.Close(websocket.StatusPolicyViolation, closeReason("invalid options_update: "+err.Error()))
			return
		}
		if f == nil {
			continue // another type: ignored, as Jetstream does
		}
		select {
		case <-updates: // superseded before serve took it
		default:
		}
		updates <- f
	}
}

// closeReason fits a reason into a close frame (123 bytes).
func closeReason(s string) string {
	const limit = 123
	if len(s) <= limit {
		return s
	}
	s = s[:limit-3]
	for len(s) > 0 && s[len(s)-1]&0xc0 == 0x80 { // do not cut a UTF-8 sequence
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xc0 {
		s = s[:len(s)-1]
	}
	return s + "..."
}

// serve streams events from start, resubscribing after each filter
// update at the last event it passed, and returns the close status to send
// (-1: none, the connection is gone).
func (h *Handler) serve(ctx context.Context, conn *websocket.Conn, req Request, start uint64, updates <-chan *Filter) (websocket.StatusCode, string) {
	f := req.Filter
	if req.RequireHello {
		select {
		case <-ctx.Done():
			return -1, ""
		case f = <-updates:
		}
	}
	w := &writer{h: h, conn: conn, compress: req.Compress}
	pos := start
	for {
		// Repo events (a failed sync) have no Jetstream form.
		sub, err := h.src.Subscribe(ctx, stream.SubscribeOptions{
			Cursor: pos, Collections: f.Collections(), DIDs: f.DIDs(), FromOldest: true,
			Kinds: []store.EventKind{store.KindRecord, store.KindIdentity, store.KindAccount}})
		if err != nil {
			return h.ended(ctx, err)
		}
		next, code, reason, again := h.pump(ctx, w, sub, f, &pos, updates)
		sub.Close()
		if !again {
			return code, reason
		}
		f = next
	}
}

// pump writes the events of sub until the connection or the subscription
// ends (again false, with the close status) or the filter changes (again
// true, with the new filter). *pos follows the last event read.
func (h *Handler) pump(ctx context.Context, w *writer, sub *stream.Subscription, f *Filter, pos *uint64,
	updates <-chan *Filter) (next *Filter, code websocket.StatusCode, reason string, again bool) {
	maxSize := f.MaxMessageSizeBytes()
	for {
		select {
		case <-ctx.Done():
			return nil, -1, "", false
		case nf := <-updates:
			return nf, 0, "", true
		case <-sub.Notices():
			// Retention pruned events this connection had not read: it
			// continues from the oldest retained one, as a cursor would.
			h.m.outdated.Inc()
		case ev, ok := <-sub.Events():
			if !ok {
				code, reason := h.ended(ctx, sub.Err())
				return nil, code, reason, false
			}
			*pos = ev.ID
			if !w.event(ctx, ev, maxSize) {
				return nil, -1, "", false
			}
		}
	}
}

// ended picks the close status for a subscription that ended with err.
func (h *Handler) ended(ctx context.Context, err error) (websocket.StatusCode, string) {
	switch {
	case ctx.Err() != nil:
		return -1, ""
	case errors.Is(err, stream.ErrClosed):
		return websocket.StatusGoingAway, "shutting down"
	default:
		h.opts.Logger.Error("jetstream: subscription failed", "err", err)
		return websocket.StatusInternalError, "internal error"
	}
}

// writer renders and sends the events of one connection.
type writer struct {
	h        *Handler
	conn     *websocket.Conn
	compress bool
}

// event sends ev unless its JSON is larger than maxSize (when positive),
// and reports whether the connection is still usable. The messages come
// from the handler's frame cache, or are rendered (and compressed) and put
// there.
func (w *writer) event(ctx context.Context, ev *store.Event, maxSize int) bool {
	h := w.h
	f := h.frames.frame(ev.ID)
	f.jsonOnce.Do(func() {
		msg, err := AppendEvent(nil, ev)
		switch {
		case err == nil:
		case errors.Is(err, stream.ErrInvalidRecord):
			// The event without its value, so that the client misses no
			// event; the value stays available through getRecord.
			h.opts.Logger.Warn("jetstream: record value not rendered; sending the event without it", "id", ev.ID, "err", err)
		default:
			h.opts.Logger.Warn("jetstream: event not rendered; skipped", "id", ev.ID, "err", err)
			return
		}
		f.json, f.ok = msg, true
		h.frames.grew(ev.ID, len(msg))
	})
	if !f.ok || (maxSize > 0 && len(f.json) > maxSize) {
		return true
	}
	msg, typ := f.json, websocket.MessageText
	if w.compress {
		f.zstdOnce.Do(func() {
			f.zstd = h.comp.Append(nil, f.json)
			h.frames.grew(ev.ID, len(f.zstd))
		})
		msg, typ = f.zstd, websocket.MessageBinary
	}
	deadline := time.Now().Add(h.opts.WriteTimeout)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := w.conn.Write(wctx, typ, msg); err != nil {
		// A write that outlived its deadline is a slow client, even when
		// the reader saw the connection close first and ended ctx.
		if !time.Now().Before(deadline) {
			h.m.slow.Inc()
			h.opts.Logger.Info("jetstream: client too slow, disconnecting", "err", err)
		} else if ctx.Err() == nil {
			h.opts.Logger.Info("jetstream: write failed, disconnecting", "err", err)
		}
		return false
	}
	h.m.events.Inc()
	h.m.bytes.Add(float64(len(msg)))
	return true
}
