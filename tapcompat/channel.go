package tapcompat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern/internal/wsserve"
)

// ackMessage is what a /channel client sends: {"type":"ack","id":N}.
type ackMessage struct {
	Type string `json:"type"`
	ID   uint64 `json:"id"`
}

// maxClientMessage bounds a message from a /channel client (acks are tiny).
const maxClientMessage = 4 << 10

// channelConn owns the deliveries one /channel connection holds.
type channelConn struct{ remote string }

// serveChannel is tap's /channel: events of the shared outbox go to
// whichever connected client is ready (tap shards, it does not broadcast);
// each is one text frame. In ack mode the client answers
// {"type":"ack","id":N} once it has processed the event; events a
// connection held unacknowledged when it closed are sent again, to it or
// another client. Shutting down closes connections without a close frame,
// so that tap clients reconnect.
func (s *Service) serveChannel(w http.ResponseWriter, r *http.Request) {
	if s.mode == ModeWebhook {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "websocket not available in webhook mode")
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the request
	}
	c.SetReadLimit(maxClientMessage)
	s.clients.Add(1)
	defer s.clients.Add(-1)
	conn := &channelConn{remote: r.RemoteAddr}
	ctx, cancel := context.WithCancel(r.Context())
	readDone := make(chan struct{})
	pingDone := make(chan struct{})
	defer func() {
		cancel()
		_ = c.CloseNow()
		<-readDone
		<-pingDone
		if n := s.outbox.RequeueOwner(conn); n > 0 {
			s.log.Info("tapcompat: /channel client left with unacknowledged events; sending them again",
				"remote", conn.remote, "count", n)
		}
	}()
	go func() {
		defer close(readDone)
		defer cancel()
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			var m ackMessage
			if err := json.Unmarshal(data, &m); err != nil || m.Type != "ack" {
				s.log.Debug("tapcompat: ignoring a /channel message that is not an ack", "remote", conn.remote)
				continue
			}
			if s.mode == ModeAck {
				s.outbox.Ack(m.ID)
			}
		}
	}()
	go func() {
		defer close(pingDone)
		ws := wsserve.Options{PingInterval: s.opts.PingInterval, WriteTimeout: s.opts.WriteTimeout, Logger: s.log}
		ws.KeepAlive(ctx, cancel, c, "tapcompat: /channel")
	}()
	for {
		d, err := s.outbox.Next(ctx, conn)
		if err != nil {
			if errors.Is(err, ErrOutboxClosed) {
				s.log.Debug("tapcompat: delivery stopped; dropping /channel connection", "remote", conn.remote)
			}
			return
		}
		wctx, wcancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
		err = c.Write(wctx, websocket.MessageText, d.Body)
		wcancel()
		if err != nil {
			s.outbox.Requeue(d, conn)
			return
		}
		if s.mode == ModeFireAndForget {
			s.outbox.Ack(d.ID)
		}
	}
}
