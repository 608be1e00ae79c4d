// Command statusphere is the classic atproto tutorial app built on cistern:
// it indexes every xyz.statusphere.status record of the network (repos that
// post one are tracked; only statuses are stored) and serves a page with each
// user's latest status and handle, updated live.
//
// The parts a host application uses are all here: cistern.Open with a
// filter, Run in a goroutine, Subscribe for changes, ListRecords and Repo for
// queries, Close at the end. See app.go.
//
//	statusphere                      # the real network
//	statusphere -demo                # an in-process test network
//
// It serves, at -listen (default 127.0.0.1:8080):
//
//	GET /              the page
//	GET /api/statuses  the latest status of each user, newest first, as JSON:
//	                   [{"did","handle","status","createdAt","uri"}]
//	GET /events        server-sent events: "event: status", data one status
//	                   as above (an empty "status": the user has none left)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/testnet"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "statusphere:", err)
		os.Exit(1)
	}
}

func run() error {
	db := flag.String("db", "./statusphere.db", "bbolt file of the index (with -demo, a temporary one is used)")
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP listen address")
	relay := flag.String("relay", "wss://bsky.network", "firehose relay URL")
	plc := flag.String("plc", "https://plc.directory", "PLC directory URL")
	demo := flag.Bool("demo", false, "run against an in-process test network where a few accounts post statuses")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := cistern.Config{Path: *db, RelayURL: *relay, PLCURL: *plc, Filter: Spec, Logger: log}
	if *demo {
		d, err := startDemo(ctx, &cfg)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer d.Close() // after serve has closed the index
	}
	return serve(ctx, cfg, *listen, log)
}

// serve opens the index, runs the app and its web server until ctx ends,
// then stops them in order.
func serve(ctx context.Context, cfg cistern.Config, listen string, log *slog.Logger) error {
	ix, err := cistern.Open(cfg)
	if err != nil {
		return err
	}
	defer ix.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	app := NewApp(ix, log)
	srv := &http.Server{Handler: app.Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("statusphere: listening on http://%s, indexing %s\n", ln.Addr(), Collection)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- ix.Run(ctx) }()
	go func() { errc <- app.Run(ctx) }()
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			errc <- err
			return
		}
		errc <- nil
	}()
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	cancel()
	shut, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = srv.Shutdown(shut) // SSE handlers end with their request contexts
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// demoNet is the test network of -demo, its poster and its temporary store.
type demoNet struct {
	net  *testnet.Network
	dir  string
	stop chan struct{}
	done chan struct{}
}

// Close stops the poster, then the network, and removes the temporary
// store. Call it after the index is closed.
func (d *demoNet) Close() {
	close(d.stop)
	<-d.done
	d.net.Close()
	os.RemoveAll(d.dir)
}

// startDemo starts a test network with three accounts that post a status
// every few seconds, and points cfg at it and at a temporary store.
func startDemo(ctx context.Context, cfg *cistern.Config) (*demoNet, error) {
	n, err := testnet.Start(ctx, testnet.Options{})
	if err != nil {
		return nil, err
	}
	var accts []*testnet.Account
	for _, h := range []string{"alice.test", "bob.test", "carol.test"} {
		a, err := n.CreateAccount(h)
		if err != nil {
			n.Close()
			return nil, err
		}
		accts = append(accts, a)
	}
	cfg.RelayURL, cfg.PLCURL, cfg.SkipHandleVerification = n.RelayURL(), n.PLCURL(), true
	dir, err := os.MkdirTemp("", "statusphere-demo-")
	if err != nil {
		n.Close()
		return nil, err
	}
	cfg.Path = dir + "/statusphere.db"
	d := &demoNet{net: n, dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		emojis := []string{"👍", "🦋", "🚀", "☕", "🌧️", "🎉", "🤔", "😴"}
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-t.C:
			}
			a := accts[rand.IntN(len(accts))]
			v, err := StatusRecord(emojis[rand.IntN(len(emojis))], time.Now())
			if err == nil {
				_, _ = a.CreateRecord(Collection, v)
			}
		}
	}()
	fmt.Println("statusphere: demo network with alice.test, bob.test and carol.test posting statuses")
	return d, nil
}

// StatusRecord returns a status record as DAG-CBOR.
func StatusRecord(status string, at time.Time) ([]byte, error) {
	return testnet.Value(map[string]any{"$type": Collection, "status": status,
		"createdAt": at.UTC().Format("2006-01-02T15:04:05.000Z")})
}
