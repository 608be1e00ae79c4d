package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/e2e/internal/wellknown"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// running is an Indexer running against refnet.
type running struct {
	*cistern.Indexer
	path string
	stop func() // stops Run and closes the Indexer
}

// indexerConfig is the Config of an Indexer following refnet.
func indexerConfig(t testing.TB, n *network, path string, spec filter.Spec) cistern.Config {
	log := testLogger(t)
	return cistern.Config{
		Path:           path,
		RelayURL:       n.PDS,
		PLCURL:         n.PLC,
		CrawlURL:       n.PDS,
		Resolver:       verifyingResolver(n, log),
		Filter:         spec,
		CursorInterval: 200 * time.Millisecond,
		Backfill:       cistern.BackfillConfig{MinBackoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second, Concurrency: 4},
		Logger:         log,
	}
}

// verifyingResolver is cistern's default resolver over refnet's PLC
// directory, with handles verified both ways: .test handles are looked up
// at https://{handle}/.well-known/atproto-did, which wellknown.Transport
// sends to the PDS.
func verifyingResolver(n *network, log *slog.Logger) resolver.Resolver {
	return resolver.NewCached(resolver.Options{
		PLCURL:                n.PLC,
		HTTPClient:            &http.Client{Transport: wellknown.Transport(n.PDS, nil), Timeout: 10 * time.Second},
		SkipDNSDomainSuffixes: []string{".test"},
		Logger:                log,
	})
}

// testLogger logs to the test's log at Info and above when -v is given
// (CISTERN_E2E_DEBUG=1 for Debug), and nowhere otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	lvl := slog.LevelInfo
	if os.Getenv("CISTERN_E2E_DEBUG") == "1" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: lvl}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	defer func() { recover() }() // a log line after the test ended
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// startIndexer opens an Indexer on path with cfg and runs it until the
// test ends or stop is called.
func startIndexer(t testing.TB, cfg cistern.Config) *running {
	t.Helper()
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatalf("open indexer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	stopped := false
	r := &running{Indexer: ix, path: cfg.Path}
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("indexer Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("indexer Run did not return 30 s after its context ended")
		}
		if err := ix.Close(); err != nil {
			t.Errorf("indexer Close: %v", err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

// waitSynced waits for each repo's backfill.
func waitSynced(t testing.TB, ix *cistern.Indexer, dids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
	defer cancel()
	for _, did := range dids {
		for {
			err := ix.WaitSynced(ctx, did)
			if errors.Is(err, cistern.ErrNotTracked) && ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond) // discovery not there yet
				continue
			}
			if err != nil {
				t.Fatalf("WaitSynced %s: %v", did, err)
			}
			break
		}
	}
}

func mustFilter(t testing.TB, spec filter.Spec) *filter.Filter {
	t.Helper()
	f, err := filter.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func dbPath(t testing.TB) string { return filepath.Join(t.TempDir(), "cistern.db") }

// lib is the replica of an Indexer in this process.
type lib struct{ ix *cistern.Indexer }

var _ replica = lib{}

func xrecordOf(r *cistern.Record) (xrecord, error) {
	v, err := r.JSON()
	if err != nil {
		return xrecord{}, err
	}
	return xrecord{URI: r.URI(), CID: r.CID.String(), Value: v}, nil
}

func (l lib) records(ctx context.Context, did, collection string) ([]xrecord, error) {
	var out []xrecord
	cursor := ""
	for {
		page, err := l.ix.ListRecords(ctx, did, collection, cistern.ListOptions{Limit: 100, Cursor: cursor})
		if errors.Is(err, cistern.ErrNotTracked) {
			return nil, nil // not known at all: nothing listed (the comparison names it)
		}
		if err != nil {
			return nil, err
		}
		for _, r := range page.Records {
			x, err := xrecordOf(r)
			if err != nil {
				return nil, err
			}
			out = append(out, x)
		}
		if page.Cursor == "" {
			return out, nil
		}
		cursor = page.Cursor
	}
}

func (l lib) record(ctx context.Context, did, collection, rkey string) (*xrecord, error) {
	r, err := l.ix.GetRecord(ctx, did, collection, rkey)
	if errors.Is(err, cistern.ErrRecordNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	x, err := xrecordOf(r)
	return &x, err
}

func (l lib) collections(ctx context.Context, did string) ([]string, error) {
	counts, err := l.ix.CollectionCounts(ctx, did)
	if err != nil {
		return nil, err
	}
	var out []string
	for c, n := range counts {
		if n > 0 {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (l lib) repo(ctx context.Context, did string) (*repoView, error) {
	r, err := l.ix.Repo(ctx, did)
	if errors.Is(err, cistern.ErrNotTracked) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &repoView{State: r.State.String(), Status: r.Status, Handle: r.Handle, Rev: r.Rev}, nil
}

// events subscribes from the start of the log and reads up to the newest
// event committed when it began.
func (l lib) events(ctx context.Context) ([]*event, error) {
	var newest uint64
	err := l.ix.Store().View(ctx, func(tx store.ReadTx) error {
		var err error
		_, newest, err = tx.EventBounds()
		return err
	})
	if err != nil || newest == 0 {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sub, err := l.ix.Subscribe(ctx, stream.SubscribeOptions{Cursor: 0})
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	var out []*event
	for ev := range sub.Events() {
		e, err := eventOf(ev)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		if ev.ID >= newest {
			return out, nil
		}
	}
	return nil, fmt.Errorf("subscription ended at %d events before id %d: %v", len(out), newest, sub.Err())
}

func eventOf(ev *store.Event) (*event, error) {
	e := &event{ID: ev.ID, Kind: ev.Kind.String(), Live: ev.Live, DID: ev.DID, Rev: ev.Rev,
		Collection: ev.Collection, RKey: ev.RKey, Handle: ev.Handle, Active: ev.Active, Status: ev.Status}
	if ev.Kind == store.KindRecord {
		e.Action = ev.Action.String()
		if len(ev.CID) > 0 {
			c, err := cid.Cast(ev.CID)
			if err != nil {
				return nil, fmt.Errorf("event %d: cid: %w", ev.ID, err)
			}
			e.CID = c.String()
		}
		if len(ev.Record) > 0 {
			v, err := cistern.ValueJSON(ev.Record)
			if err != nil {
				return nil, fmt.Errorf("event %d: %w", ev.ID, err)
			}
			e.Value = v
		}
	}
	return e, nil
}
