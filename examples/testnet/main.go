// Command testnet runs the simulated AT network of package testnet on one
// loopback address, for demos and benchmarks.
//
// The PLC directory, the relay and a PDS host share one HTTP server: DID
// documents at /did:..., the firehose at /xrpc/com.atproto.sync.subscribeRepos
// and the PDS's XRPC methods under /xrpc/. When it serves, it prints exactly
// one line to stdout:
//
//	READY {"plc":"http://...","pds":"http://...","relay":"http://..."}
//
// It runs until SIGINT or SIGTERM.
//
// Flags:
//
//	-listen addr       address to listen on (default 127.0.0.1:2590)
//	-accounts N        accounts generated at start (default 10)
//	-records N         records per generated account (default 100)
//	-collections a,b   collections of generated records (default app.bsky.feed.post)
//	-rate N            commits per second after start; 0 for none (default 0)
//	-seed N            seed for DIDs and keys; 0 for random (default 0)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cistern-dev/cistern/testnet"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testnet:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:2590", "address to listen on")
	accounts := flag.Int("accounts", 10, "accounts generated at start")
	records := flag.Int("records", 100, "records per generated account")
	collections := flag.String("collections", "app.bsky.feed.post", "comma-separated collections of generated records")
	rate := flag.Float64("rate", 0, "commits per second after start (0 for none)")
	seed := flag.Uint64("seed", 0, "seed for DIDs and keys (0 for random)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	n, err := testnet.Start(ctx, testnet.Options{Addr: *listen, Seed: *seed, Logger: log})
	if err != nil {
		return err
	}
	defer n.Close()
	var colls []string
	for _, c := range strings.Split(*collections, ",") {
		if c = strings.TrimSpace(c); c != "" {
			colls = append(colls, c)
		}
	}
	if len(colls) == 0 {
		colls = []string{"app.bsky.feed.post"}
	}
	if _, err := n.Generate(ctx, testnet.GenerateOptions{Accounts: *accounts, Records: *records, Collections: colls}); err != nil {
		return err
	}
	if *rate > 0 {
		load := n.StartLoad(testnet.LoadOptions{Rate: *rate, Collection: colls[0]})
		defer load.Stop()
	}
	urls, err := json.Marshal(map[string]string{"plc": n.PLCURL(), "pds": n.PDSURL(), "relay": n.RelayURL()})
	if err != nil {
		return err
	}
	fmt.Printf("READY %s\n", urls)
	log.Info("serving", "listen", *listen, "accounts", *accounts, "records", *records, "rate", *rate)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
