package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/pgstore"
	"github.com/cistern-dev/cistern/store/pgstore/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStoreFlag(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		location string
		postgres bool
	}{
		{"default", nil, nil, "./cistern.db", false},
		{"-db", []string{"-db", "x.db"}, nil, "x.db", false},
		{"-store path", []string{"-store", "y.db"}, nil, "y.db", false},
		{"-store wins over -db", []string{"-db", "x.db", "-store", "y.db"}, nil, "y.db", false},
		{"-store url", []string{"-store", "postgres://u:p@db:5432/cistern"}, nil, "postgres://u:p@db:5432/cistern", true},
		{"environment", nil, map[string]string{"CISTERN_STORE": "postgresql://db/cistern?search_path=ix"}, "postgresql://db/cistern?search_path=ix", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.storeLocation(); got != tc.location || isPostgresURL(got) != tc.postgres {
				t.Errorf("store %q (postgres %v), want %q (%v)", got, isPostgresURL(got), tc.location, tc.postgres)
			}
			if want := len(tc.args) > 0 || len(tc.env) > 0; c.dbSet != want {
				t.Errorf("dbSet = %v, want %v", c.dbSet, want)
			}
		})
	}
}

// server is a run of the server in this process.
type server struct {
	base   string
	cancel context.CancelFunc
	done   chan error
	out    *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer runs the server with args until the test ends, and returns
// once it listens.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	cfg, err := parseFlags(append([]string{"-listen", "127.0.0.1:0", "-log-level", "warn"}, args...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cancel: cancel, done: make(chan error, 1), out: &lockedBuffer{}}
	stderr := &lockedBuffer{}
	go func() { s.done <- run(ctx, cfg, s.out, stderr) }()
	t.Cleanup(func() { s.stop(t) })
	re := regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if m := re.FindStringSubmatch(s.out.String()); m != nil {
			s.base = m[1]
			return s
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("server exited: %v\nstdout:\n%s\nstderr:\n%s", err, s.out, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start; stdout:\n%s\nstderr:\n%s", s.out, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the server and fails t if it did not stop cleanly.
func (s *server) stop(t *testing.T) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("server: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("server did not stop within 30 s")
	}
}

func (s *server) getJSON(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get(s.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// The demo, indexed into PostgreSQL through -store: the records land in
// the database and are served back.
func TestDemoOnPostgres(t *testing.T) {
	url := pgtest.Schema(t)
	srv := startServer(t, "-demo", "-store", url)
	if !strings.Contains(srv.out.String(), "store postgres://") {
		t.Errorf("startup line does not name the PostgreSQL store:\n%s", srv.out)
	}
	var st struct {
		Records int64
		Repos   map[string]int64
	}
	for deadline := time.Now().Add(90 * time.Second); ; {
		srv.getJSON(t, "/stats", &st)
		if st.Records > 0 && st.Repos["synced"] == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo not indexed; stats %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var page struct {
		Records []struct{ URI, CID string }
	}
	if code := srv.getJSON(t, "/xrpc/com.atproto.repo.listRecords?repo=alice.test&collection=app.bsky.feed.post&limit=5", &page); code != 200 || len(page.Records) != 5 {
		t.Fatalf("listRecords: %d %+v", code, page)
	}
	srv.stop(t)

	s, err := pgstore.Open(t.Context(), url, &pgstore.Options{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(t.Context(), func(tx store.ReadTx) error {
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		if c.Records < st.Records || c.ReposByState[store.StateSynced] != 3 {
			t.Errorf("the database holds %+v; the server reported %+v", c, st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
