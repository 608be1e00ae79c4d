package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cistern-dev/cistern/stream"
)

// The plain-HTTP forms of the event stream (newline-delimited JSON and
// server-sent events) are documented on StreamHandler.

// isWebSocketUpgrade reports whether r asks for a WebSocket.
func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// wantsEventStream reports whether the client asks for server-sent events.
func wantsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// lastEventCursor applies an EventSource's Last-Event-ID to opts when the
// URL gives no cursor.
func lastEventCursor(r *http.Request, opts *stream.SubscribeOptions) error {
	v := strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" || r.URL.Query().Has("cursor") || !wantsEventStream(r) {
		return nil
	}
	c, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return errors.New("Last-Event-ID " + strconv.Quote(v) + " is not an event id")
	}
	opts.Cursor, opts.Live = c, false
	return nil
}

// plainStream writes the stream to an HTTP response, as NDJSON or SSE.
type plainStream struct {
	h   *streamHandler
	w   http.ResponseWriter
	rc  *http.ResponseController
	sse bool
	buf []byte // an event's JSON
	out []byte // the bytes written for one object
}

// servePlain answers a non-WebSocket GET with the streamed response, once
// the subscription was made (sub) or refused with an error frame
// (frameErr, frameMsg).
func (h *streamHandler) servePlain(ctx context.Context, w http.ResponseWriter, r *http.Request, sub *stream.Subscription, frameErr, frameMsg string) {
	select {
	case <-h.closing:
		streamError(w, http.StatusServiceUnavailable, "Unavailable", "the server is shutting down")
		return
	default:
	}
	if frameErr != "" {
		streamError(w, http.StatusBadRequest, frameErr, frameMsg)
		return
	}
	p := &plainStream{h: h, w: w, rc: http.NewResponseController(w), sse: wantsEventStream(r)}
	if p.sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // ask reverse proxies not to buffer
	w.WriteHeader(http.StatusOK)
	if !p.flush() {
		return
	}
	p.serve(ctx, sub)
}

func (p *plainStream) serve(ctx context.Context, sub *stream.Subscription) {
	idle := time.NewTimer(p.h.opts.PingInterval)
	defer idle.Stop()
	notice := func(n stream.Notice) bool {
		return p.send(0, stream.AppendNoticeJSON(nil, n), true)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.h.closing:
			p.send(0, stream.AppendErrorJSON(nil, "Unavailable", "the server is shutting down"), true)
			return
		case <-idle.C:
			if !p.heartbeat() {
				return
			}
		case n := <-sub.Notices():
			if !notice(n) {
				return
			}
		case ev, ok := <-sub.Events():
			if !ok {
				p.ended(ctx, sub.Err())
				return
			}
			select {
			case n := <-sub.Notices():
				if !notice(n) {
					return
				}
			default:
			}
			b := p.h.renderEvent(&p.buf, ev)
			// Flush when no other event is waiting: a replay goes out in
			// large writes, a live event at once.
			if !p.send(ev.ID, b, len(sub.Events()) == 0) {
				return
			}
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(p.h.opts.PingInterval)
	}
}

// send writes one object (with its event id in SSE, when id > 0) within
// WriteTimeout, and flushes if asked.
func (p *plainStream) send(id uint64, obj []byte, flush bool) bool {
	_ = p.rc.SetWriteDeadline(time.Now().Add(p.h.opts.WriteTimeout))
	out := p.out[:0]
	if p.sse {
		if id > 0 {
			out = append(out, "id: "...)
			out = strconv.AppendUint(out, id, 10)
			out = append(out, '\n')
		}
		// The JSON has no raw newline (strings escape it), so one data
		// line carries it.
		out = append(out, "data: "...)
		out = append(out, bytes.TrimSpace(obj)...)
		out = append(out, "\n\n"...)
	} else {
		out = append(append(out, bytes.TrimSpace(obj)...), '\n')
	}
	p.out = out
	if _, err := p.w.Write(out); err != nil {
		p.failed(err)
		return false
	}
	if flush {
		return p.flush()
	}
	return true
}

func (p *plainStream) flush() bool {
	_ = p.rc.SetWriteDeadline(time.Now().Add(p.h.opts.WriteTimeout))
	if err := p.rc.Flush(); err != nil {
		p.failed(err)
		return false
	}
	return true
}

func (p *plainStream) failed(err error) {
	p.h.opts.Logger.Info("stream: write failed, disconnecting", "err", err)
}

func (p *plainStream) heartbeat() bool {
	if p.sse {
		_ = p.rc.SetWriteDeadline(time.Now().Add(p.h.opts.WriteTimeout))
		if _, err := p.w.Write([]byte(": heartbeat\n\n")); err != nil {
			p.failed(err)
			return false
		}
		return p.flush()
	}
	return p.send(0, stream.AppendNoticeJSON(nil, stream.Notice{Name: "Heartbeat", Message: "no new event"}), true)
}

// ended sends why the subscription ended, as the last object.
func (p *plainStream) ended(ctx context.Context, err error) {
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.Is(err, stream.ErrOutdatedCursor):
		p.send(0, stream.AppendErrorJSON(nil, "OutdatedCursor", err.Error()+"; events this client had not read were pruned"), true)
	case errors.Is(err, stream.ErrClosed):
		p.send(0, stream.AppendErrorJSON(nil, "Unavailable", "the server is shutting down"), true)
	default:
		p.h.opts.Logger.Error("stream: subscription failed", "err", err)
		p.send(0, stream.AppendErrorJSON(nil, "InternalServerError", "the stream failed"), true)
	}
}

// closePlain ends every plain-HTTP stream, and refuses new ones with 503.
func (h *streamHandler) closePlain() {
	h.closeOnce.Do(func() { close(h.closing) })
}
