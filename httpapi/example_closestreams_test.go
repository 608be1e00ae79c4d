package httpapi_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/httpapi"
)

// Shut the server down without waiting for clients that follow /stream
// over plain HTTP (curl -N, EventSource): CloseStreams ends their
// responses when Shutdown starts.
func ExampleServer_CloseStreams() {
	ix, err := cistern.Open(cistern.Config{Path: "cistern.db"})
	if err != nil {
		log.Fatal(err)
	}
	defer ix.Close()
	api := httpapi.New(ix, httpapi.Options{})
	srv := &http.Server{Addr: "127.0.0.1:2470", Handler: api}
	srv.RegisterOnShutdown(api.CloseStreams)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
