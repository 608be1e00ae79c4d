// Command cistern is the standalone cistern server: it indexes part of the
// AT Protocol network into a local bbolt file and serves it over HTTP (XRPC
// queries, the /stream WebSocket, management and Prometheus metrics, see
// package httpapi), with a status page at /.
//
// Every flag can also be set from the environment as CISTERN_<FLAG>, upper
// case with dashes as underscores (CISTERN_ADMIN_TOKEN=...); a flag given on
// the command line wins.
//
//	cistern -signal xyz.statusphere.status -collections xyz.statusphere.status
//	cistern -demo     # an in-process test network; no internet needed
//	cistern -store postgres://cistern@db/cistern -signal ...              # the indexer, on PostgreSQL
//	cistern -store postgres://cistern@db/cistern -read-only -listen :2471 # a read replica of it
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/tapcompat"
)

// config is what the flags say.
type config struct {
	DB          string
	Store       string // -store: a bbolt path or a postgres:// URL; wins over -db
	ReadOnly    bool
	Listen      string
	Relay       string
	PLC         string
	FullNetwork bool
	Signals     []string
	Collections []string
	Track       []string
	Exclude     []string
	AdminToken  string
	Concurrency int
	Strategy    backfill.Strategy
	Verify      cistern.VerifyMode
	Retention   time.Duration
	LogLevel    slog.Level
	Demo        bool
	Sched       schedulerFlags
	Debug       debugFlags
	// tap compatibility (package tapcompat)
	AdminPassword   string
	Tap             bool
	TapWebhook      string
	TapDisableAcks  bool
	TapRetryTimeout time.Duration
	// SkipHandleVerification takes handles from DID documents unchecked.
	SkipHandleVerification bool

	// AdminTokenFile is where the generated token is kept when no
	// -admin-token is given; "" means <DB>.admin-token.
	AdminTokenFile string

	// HTTP connection limits.
	ReadTimeout time.Duration
	IdleTimeout time.Duration
	MaxConns    int
	MaxStreams  int

	// HostAuthority: the -relay sources are PDS hosts (Config.HostAuthority).
	HostAuthority bool

	// Backlinks keeps the backlink index (Config.Backlinks).
	Backlinks bool

	// CompactTo, when set, compacts the store into this new file and exits.
	CompactTo string

	dbSet bool // -db or -store was given (the demo uses a temporary store otherwise)
}

// listFlag is a comma-separated list.
type listFlag struct{ list *[]string }

func (f listFlag) String() string {
	if f.list == nil {
		return ""
	}
	return strings.Join(*f.list, ",")
}

func (f listFlag) Set(s string) error {
	*f.list = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*f.list = append(*f.list, v)
		}
	}
	return nil
}

// parseFlags reads the command line and the CISTERN_* environment.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("cistern", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DB, "db", "./cistern.db", "bbolt file of the store (see -store)")
	fs.StringVar(&c.Store, "store", "", "the store: a bbolt file path, or a PostgreSQL URL postgres://user:pass@host/db[?search_path=schema] (default: -db)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:2470", "HTTP listen address")
	fs.StringVar(&c.Relay, "relay", "wss://bsky.network", "firehose relay (or PDS) URL; a comma list follows several, each with its own cursor")
	fs.StringVar(&c.PLC, "plc", "https://plc.directory", "PLC directory URL")
	fs.BoolVar(&c.FullNetwork, "full-network", false, "track every repo of the network")
	fs.Var(listFlag{&c.Signals}, "signal", "comma list of signal collections: repos holding a record in one are tracked")
	fs.Var(listFlag{&c.Collections}, "collections", "comma list of collection patterns stored (default: all)")
	fs.Var(listFlag{&c.Track}, "track", "comma list of DIDs tracked explicitly")
	fs.Var(listFlag{&c.Exclude}, "exclude", "comma list of DIDs never indexed")
	fs.StringVar(&c.AdminToken, "admin-token", "", "bearer token for the management API (default: one generated into -admin-token-file)")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", "", "file holding the management token, created with a random token (mode 0600) if absent (default <db>.admin-token)")
	fs.StringVar(&c.AdminPassword, "admin-password", "", "password for the management API as Basic auth with user admin (tap's TAP_ADMIN_PASSWORD), beside -admin-token")
	fs.BoolVar(&c.Tap, "tap", false, "serve tap's protocol: /channel, /resolve, /info, /stats/* (see docs/tap.md)")
	fs.StringVar(&c.TapWebhook, "tap-webhook", "", "deliver tap events by POST to this URL instead of /channel (implies -tap)")
	fs.BoolVar(&c.TapDisableAcks, "tap-disable-acks", false, "tap fire-and-forget mode: /channel events count as acknowledged once written")
	fs.DurationVar(&c.TapRetryTimeout, "tap-retry-timeout", 60*time.Second, "send a /channel event again when not acknowledged within this")
	fs.IntVar(&c.Concurrency, "backfill-concurrency", 16, "repos backfilled at once")
	verify := fs.String("verify", "full", "what is verified: full, backfill or none")
	strategy := fs.String("backfill-strategy", "auto", "how repos are fetched: full (getRepo), sparse (getBlocks, stored collections only) or auto")
	fs.DurationVar(&c.Retention, "retention", 0, "drop events older than this (e.g. 72h); 0 keeps everything")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	c.Sched.register(fs)
	c.Debug.register(fs)
	fs.DurationVar(&c.ReadTimeout, "read-timeout", httpapi.DefaultReadTimeout, "longest time to read one request, body included")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", httpapi.DefaultIdleTimeout, "close keep-alive connections idle this long")
	fs.IntVar(&c.MaxConns, "max-conns", httpapi.DefaultMaxConns, "open connections at most (/stream included); more are refused with 503")
	fs.IntVar(&c.MaxStreams, "max-streams", httpapi.DefaultMaxStreams, "concurrent /stream connections at most; more are refused with 503")
	fs.BoolVar(&c.HostAuthority, "host-authority", false, "the -relay sources are PDS hosts: apply a commit only from the host the repo's DID document names")
	fs.StringVar(&c.CompactTo, "compact-to", "", "copy the store (-db, not in use) into this new file without its free pages, then exit")
	fs.BoolVar(&c.ReadOnly, "read-only", false, "serve a store another process indexes (a read replica, with -store postgres://...): queries, /stream, /stats and /metrics; no indexing, management writes refused")
	fs.BoolVar(&c.Backlinks, "backlinks", false, "keep the backlink index and serve blue.microcosm.links.getBacklinks and getBacklinksCount (see docs/backlinks.md); turned on for an existing store, it is built from the stored records first")
	fs.BoolVar(&c.Demo, "demo", false, "run against an in-process test network with a few accounts writing records")
	fs.BoolVar(&c.SkipHandleVerification, "skip-handle-verification", false, "take handles from DID documents unchecked (a test network's .test handles cannot be verified)")

	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "CISTERN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
			if f.Name == "db" || f.Name == "store" {
				c.dbSet = true
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "db" || f.Name == "store" {
			c.dbSet = true
		}
	})
	if c.Verify, err = cistern.ParseVerifyMode(*verify); err != nil {
		return nil, err
	}
	if c.Strategy, err = backfill.ParseStrategy(*strategy); err != nil {
		return nil, fmt.Errorf("-backfill-strategy: %w", err)
	}
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	if c.Retention < 0 {
		return nil, fmt.Errorf("-retention must not be negative")
	}
	if !loopbackListen(c.Listen) && c.AdminToken == "" && c.AdminTokenFile == "" && c.AdminPassword == "" {
		return nil, fmt.Errorf("-listen %s is not a loopback address: set -admin-token, -admin-token-file or -admin-password to serve beyond this machine", c.Listen)
	}
	for _, r := range c.relays() {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("-relay: %q is not a ws, wss, http or https URL", r)
		}
	}
	if len(c.relays()) == 0 {
		return nil, fmt.Errorf("-relay: no firehose source given")
	}
	if c.ReadTimeout <= 0 || c.IdleTimeout <= 0 {
		return nil, fmt.Errorf("-read-timeout and -idle-timeout must be positive")
	}
	if c.MaxConns < 1 || c.MaxStreams < 1 {
		return nil, fmt.Errorf("-max-conns and -max-streams must be at least 1")
	}
	if c.MaxStreams >= c.MaxConns {
		return nil, fmt.Errorf("-max-streams (%d) must be below -max-conns (%d), or streams would leave no room for queries", c.MaxStreams, c.MaxConns)
	}
	if c.ReadOnly && c.Demo {
		return nil, fmt.Errorf("-read-only and -demo cannot be combined: a replica serves a store another process indexes")
	}
	if c.TapWebhook != "" || c.TapDisableAcks {
		c.Tap = true
	}
	if c.TapRetryTimeout <= 0 {
		return nil, fmt.Errorf("-tap-retry-timeout must be positive")
	}
	if c.Concurrency < 1 {
		return nil, fmt.Errorf("-backfill-concurrency must be at least 1")
	}
	if err := c.Sched.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// applyHardening sets what the hardening flags say in icfg: handle
// verification and the firehose sources.
func (c *config) applyHardening(icfg *cistern.Config) {
	icfg.SkipHandleVerification = c.SkipHandleVerification
	icfg.HostAuthority = c.HostAuthority
	if relays := c.relays(); len(relays) > 1 {
		// Several firehose sources, each followed with its own cursor.
		icfg.RelayURL, icfg.Sources = relays[0], relays
	}
}

// firehoseSources returns the sources the indexer follows.
func firehoseSources(icfg cistern.Config) []string {
	if len(icfg.Sources) > 0 {
		return icfg.Sources
	}
	return []string{icfg.RelayURL}
}

// relays returns the firehose sources of -relay, a comma list.
func (c *config) relays() []string {
	var out []string
	for _, r := range strings.Split(c.Relay, ",") {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}

// spec returns the filter the flags ask for; the zero Spec (keep what the
// store has) when none of the filter flags is given.
func (c *config) spec() filter.Spec {
	return filter.Spec{FullNetwork: c.FullNetwork, DIDs: c.Track, Signals: c.Signals,
		Collections: c.Collections, Excludes: c.Exclude}
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cistern:", err)
		os.Exit(2)
	}
	if cfg.CompactTo != "" {
		if err := compactStore(cfg.DB, cfg.CompactTo, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "cistern:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cistern:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down in order: HTTP first (no new
// requests), then the indexer's Run (which saves its cursors), then the
// store.
func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	icfg := cistern.Config{
		Path:     cfg.storeLocation(),
		RelayURL: cfg.Relay,
		PLCURL:   cfg.PLC,
		Filter:   cfg.spec(),
		Verify:   cfg.Verify,
		Backfill: cistern.BackfillConfig{Concurrency: cfg.Concurrency, Strategy: cfg.Strategy},
		Logger:   log,
		ReadOnly: cfg.ReadOnly,
	}
	icfg.Retention.MaxAge = cfg.Retention
	cfg.Sched.apply(&icfg)
	icfg.SkipHandleVerification = cfg.SkipHandleVerification
	icfg.Backlinks = cfg.Backlinks

	var demo *demoNet
	if cfg.Demo {
		var err error
		if demo, err = startDemo(ctx, cfg, &icfg, log); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer demo.Close()
	}

	pg, where, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	if pg != nil {
		defer pg.Close()
		icfg.Store = pg
	} else {
		where = icfg.Path
	}
	ix, err := cistern.Open(icfg)
	if err != nil {
		return err
	}
	defer ix.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	waitDebug, err := cfg.Debug.serve(ctx, log)
	if err != nil {
		ln.Close()
		return fmt.Errorf("-debug-listen: %w", err)
	}
	defer waitDebug()
	var tap *tapcompat.Service
	if cfg.Tap {
		if tap, err = tapcompat.New(ix, tapcompat.Options{
			WebhookURL:    cfg.TapWebhook,
			DisableAcks:   cfg.TapDisableAcks,
			AdminPassword: cfg.AdminPassword,
			RetryTimeout:  cfg.TapRetryTimeout,
			Sources:       firehoseSources(icfg),
			Logger:        log,
		}); err != nil {
			return err
		}
	}
	tokenBeside := icfg.Path
	if pg != nil || tokenBeside == "" {
		tokenBeside = cfg.DB // a PostgreSQL store: beside -db's path
	}
	tok, err := loadAdminToken(cfg, tokenBeside)
	if err != nil {
		return err
	}
	api := httpapi.New(ix, httpapi.Options{
		AdminToken:    tok.value,
		AdminPassword: cfg.AdminPassword,
		Tap:           tap,
		// Reads without the token from a local browser, when the token is
		// the server's own and nothing beyond this machine can connect.
		LoopbackReads: tok.file != "" && loopbackListen(cfg.Listen),
		Logger:        log,
		MaxStreams:    cfg.MaxStreams,
	})
	st := newStatus(ix, time.Now())
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("GET /{$}", api.Admin(st))
	srv := httpapi.NewHTTPServer(mux, httpapi.Limits{ReadTimeout: cfg.ReadTimeout, IdleTimeout: cfg.IdleTimeout}, log)
	srv.RegisterOnShutdown(api.CloseStreams) // plain-HTTP /stream responses would hold Shutdown
	ln = httpapi.LimitListener(ln, cfg.MaxConns)

	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "cistern: tracking %s; store %s; listening on %s (status page %s/)\n",
		describe(ix.Filter().Spec()), where, base, base)
	fmt.Fprintf(stdout, "cistern: %s\n", tok.describe())
	log.Info("management token", "file", tok.file, "generated", tok.generated)
	if demo != nil {
		demo.printHelp(stdout, base)
	}

	runCtx, cancelRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- ix.Run(runCtx) }()
	tapCtx, cancelTap := context.WithCancel(context.Background())
	defer cancelTap()
	tapDone := make(chan error, 1)
	if tap != nil {
		go func() { tapDone <- tap.Run(tapCtx) }()
	} else {
		tapDone <- nil
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(ln) }()
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		st.report(ctx, stdout, progressInterval(cfg))
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-runDone:
		runDone <- runErr
	case err := <-srvDone:
		cancelTap()
		<-tapDone
		cancelRun()
		<-runDone
		return fmt.Errorf("http: %w", err)
	}
	fmt.Fprintln(stdout, "cistern: shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	cancelTap()
	if err := <-tapDone; err != nil {
		log.Warn("tap delivery", "err", err)
	}
	cancelRun()
	if err := <-runDone; err != nil && runErr == nil {
		runErr = err
	}
	<-progDone
	if err := ix.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if runErr != nil {
		return runErr
	}
	fmt.Fprintln(stdout, "cistern: stopped cleanly")
	return nil
}

func progressInterval(cfg *config) time.Duration {
	if cfg.Demo {
		return 2 * time.Second
	}
	return 10 * time.Second
}

// describe says in words what a filter tracks.
func describe(s filter.Spec) string {
	var parts []string
	switch {
	case s.FullNetwork:
		parts = append(parts, "the full network")
	case len(s.DIDs) == 0 && len(s.Signals) == 0:
		parts = append(parts, "nothing yet (add repos with POST /repos/add or PATCH /filter)")
	}
	if n := len(s.DIDs); n > 0 {
		parts = append(parts, fmt.Sprintf("%d explicit repo(s)", n))
	}
	if len(s.Signals) > 0 {
		parts = append(parts, "repos with records in "+strings.Join(s.Signals, ", "))
	}
	if len(s.Excludes) > 0 {
		parts = append(parts, fmt.Sprintf("minus %d excluded", len(s.Excludes)))
	}
	colls := "all collections"
	if len(s.Collections) > 0 {
		colls = "collections " + strings.Join(s.Collections, ", ")
	}
	return strings.Join(parts, " and ") + ", storing " + colls
}
