package httpapi_test

import (
	"context"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
)

// Serve an Indexer over HTTP: XRPC queries, /stream, management behind a
// token, and a page of the host's own behind the same rule.
func ExampleNew() {
	ix, err := cistern.Open(cistern.Config{
		Path:   "cistern.db",
		Filter: filter.Spec{Signals: []string{"xyz.statusphere.status"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ix.Close()
	go ix.Run(context.Background())

	api := httpapi.New(ix, httpapi.Options{AdminToken: "s3cret"})
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("GET /admin/report", api.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("only for the operator\n"))
	})))
	log.Fatal(http.ListenAndServe("127.0.0.1:2470", mux))
}

// Serve the API with timeouts and a cap on connections: a client past the
// cap is told 503 TooManyConnections instead of waiting.
func ExampleNewHTTPServer() {
	ix, err := cistern.Open(cistern.Config{Path: "cistern.db"})
	if err != nil {
		log.Fatal(err)
	}
	defer ix.Close()
	go ix.Run(context.Background())

	api := httpapi.New(ix, httpapi.Options{AdminToken: "s3cret", MaxStreams: 500})
	limits := httpapi.Limits{ReadTimeout: 20 * time.Second, MaxConns: 1000}
	srv := httpapi.NewHTTPServer(api, limits, slog.Default())
	ln, err := net.Listen("tcp", "127.0.0.1:2470")
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(httpapi.LimitListener(ln, limits.MaxConns)))
}
