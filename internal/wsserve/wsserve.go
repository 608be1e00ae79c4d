// Package wsserve holds what cistern's WebSocket endpoints share: the
// settings of a served connection (ping interval, write timeout, allowed
// browser origins, logger) with their defaults, the upgrade, and the pinger
// that ends a connection whose client stopped answering.
//
// httpapi's /stream (StreamOptions), jetstream's /subscribe (Options) and
// tapcompat's /channel each keep their own public options, documented for
// their users, and convert them to Options: the defaults and the keep-alive
// are written here once.
package wsserve

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// Defaults of Options.
const (
	DefaultPingInterval = 30 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// Options are the settings of a served connection. Zero values mean the
// defaults.
type Options struct {
	// PingInterval is how often the client is pinged. Default 30s.
	PingInterval time.Duration
	// WriteTimeout bounds the writing of one frame, and the wait for a
	// pong. Default 10s.
	WriteTimeout time.Duration
	// OriginPatterns lists the host patterns of browser origins allowed
	// besides the request's own host (websocket.AcceptOptions).
	OriginPatterns []string
	// Logger receives connection failures. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns o with its zero values set to the defaults.
func (o Options) WithDefaults() Options {
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Accept upgrades the request to a WebSocket, allowing the origins of
// o.OriginPatterns besides the request's own host (clients that send no
// Origin header are always allowed). On failure it has answered the
// request.
func (o Options) Accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	return websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: o.OriginPatterns})
}

// KeepAlive pings conn every PingInterval until ctx ends, and calls cancel
// (the connection's end) when a pong does not come back within
// WriteTimeout, logging it under name. It returns when either happened.
func (o Options) KeepAlive(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn, name string) {
	t := time.NewTicker(o.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, o.WriteTimeout)
		err := conn.Ping(pctx)
		pcancel()
		if err != nil {
			if ctx.Err() == nil {
				o.Logger.Info(name+": client did not answer ping", "err", err)
			}
			cancel()
			return
		}
	}
}
