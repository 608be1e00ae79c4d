// Command cisternd runs an Indexer on a bbolt file until SIGTERM or
// SIGINT, for the end-to-end tests that kill it (SIGKILL included) in the
// middle of its work. It is test scaffolding, not a server: the HTTP side
// is examples/cistern.
//
//	cisternd -db cistern.db -relay http://localhost:2583 -plc http://localhost:2582 -dids did:plc:a,did:plc:b
//
// It prints "SYNCED <did>" when each repo listed in -wait is synced. Handles
// are verified as the e2e tests do, through e2e/internal/wellknown.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/e2e/internal/wellknown"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cisternd:", err)
		os.Exit(1)
	}
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func run() error {
	db := flag.String("db", "cistern.db", "bbolt file")
	relay := flag.String("relay", "", "firehose source (the PDS)")
	plc := flag.String("plc", "", "PLC directory")
	dids := flag.String("dids", "", "comma-separated DIDs to track")
	signals := flag.String("signals", "", "comma-separated signal collections")
	collections := flag.String("collections", "", "comma-separated collection patterns to store")
	wait := flag.String("wait", "", "comma-separated DIDs to report SYNCED for")
	cursorInterval := flag.Duration("cursor-interval", 200*time.Millisecond, "how often the firehose cursor is saved")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ix, err := cistern.Open(cistern.Config{
		Path:     *db,
		RelayURL: *relay,
		CrawlURL: *relay,
		// The resolver has the PLC directory; Config.PLCURL would be
		// ignored (and warned about).
		Resolver: resolver.NewCached(resolver.Options{
			PLCURL:                *plc,
			HTTPClient:            &http.Client{Transport: wellknown.Transport(*relay, nil), Timeout: 10 * time.Second},
			SkipDNSDomainSuffixes: []string{".test"},
		}),
		CursorInterval: *cursorInterval,
		Filter:         filter.Spec{DIDs: list(*dids), Signals: list(*signals), Collections: list(*collections)},
		Backfill:       cistern.BackfillConfig{MinBackoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second},
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		return err
	}
	defer ix.Close()
	for _, did := range list(*wait) {
		go func() {
			if err := ix.WaitSynced(ctx, did); err == nil {
				fmt.Println("SYNCED", did)
			}
		}()
	}
	fmt.Println("RUNNING")
	if err := ix.Run(ctx); err != nil {
		return err
	}
	return ix.Close()
}
