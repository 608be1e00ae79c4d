package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugFlags say where the Go profiler is served.
type debugFlags struct {
	Listen string
}

func (d *debugFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.Listen, "debug-listen", "", "serve Go profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; off by default (keep it on loopback)")
}

// serveDebug serves net/http/pprof on d.Listen until ctx ends; it returns
// at once when no address is set. The returned function waits for the
// server to stop.
func (d *debugFlags) serve(ctx context.Context, log *slog.Logger) (wait func(), err error) {
	if d.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", d.Listen)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug listener", "err", err)
		}
	}()
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("serving Go profiles", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { stop(); srv.Close(); <-done }, nil
}
