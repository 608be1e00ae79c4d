package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

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
	srv := startServer(t, "-demo", "-store", url, "-admin-token-file", filepath.Join(t.TempDir(), "token"))
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

// A read replica serves the database the demo indexer writes: the same
// answers, the stream's replay then its live tail, and a clear refusal of
// management writes.
func TestReadReplica(t *testing.T) {
	url := pgtest.Schema(t)
	indexer := startServer(t, "-demo", "-store", url, "-admin-token-file", filepath.Join(t.TempDir(), "token"))
	var ist struct {
		Records int64
		Repos   map[string]int64
	}
	for deadline := time.Now().Add(90 * time.Second); ist.Repos["synced"] != 3; time.Sleep(200 * time.Millisecond) {
		indexer.getJSON(t, "/stats", &ist)
		if time.Now().After(deadline) {
			t.Fatalf("demo not indexed; stats %+v", ist)
		}
	}
	replicaToken := filepath.Join(t.TempDir(), "token")
	replica := startServer(t, "-store", url, "-read-only", "-admin-token-file", replicaToken)

	// The same records, read from the replica.
	list := func(s *server) []string {
		var page struct {
			Records []struct{ URI, CID string }
		}
		if code := s.getJSON(t, "/xrpc/com.atproto.repo.listRecords?repo=bob.test&collection=app.bsky.feed.like&limit=100", &page); code != 200 {
			t.Fatalf("listRecords: %d", code)
		}
		var out []string
		for _, r := range page.Records {
			out = append(out, r.URI+" "+r.CID)
		}
		return out
	}
	if a, b := list(indexer), list(replica); len(a) == 0 || strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Errorf("listRecords: indexer %d records, replica %d; differ", len(a), len(b))
	}
	var rst struct {
		NewestEvent uint64
		Repos       map[string]int64
	}
	if code := replica.getJSON(t, "/stats", &rst); code != 200 || rst.Repos["synced"] != 3 || rst.NewestEvent == 0 {
		t.Errorf("replica /stats: %d %+v", code, rst)
	}
	for _, path := range []string{"/", "/metrics", "/health"} {
		if code := replica.getJSON(t, path, nil); code != 200 {
			t.Errorf("replica GET %s: %d", path, code)
		}
	}

	// Management writes are refused, saying why.
	for _, req := range []struct{ method, path, body string }{
		{"POST", "/repos/add", `{"dids":["did:plc:abcdefghijklmnopqrstuvwx"]}`},
		{"PATCH", "/filter", `{"addSignals":["a.b.c"]}`},
	} {
		r, _ := http.NewRequest(req.method, replica.base+req.path, strings.NewReader(req.body))
		r.Header.Set("Content-Type", "application/json")
		tok, err := os.ReadFile(replicaToken)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "read-only") {
			t.Errorf("%s %s on the replica: %d %s; want 403 saying read-only", req.method, req.path, resp.StatusCode, body)
		}
	}

	// The stream: replay from the start, then events the indexer commits
	// later (the demo keeps writing), without gap or repeat.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(replica.base, "http", "ws", 1)+"/stream?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	var last uint64
	for last <= rst.NewestEvent+5 {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("stream after event %d (replica's newest at start %d): %v", last, rst.NewestEvent, err)
		}
		var ev struct {
			ID uint64 `json:"id"`
		}
		if err := json.Unmarshal(msg, &ev); err != nil {
			t.Fatalf("stream message %q: %v", msg, err)
		}
		if ev.ID != last+1 {
			t.Fatalf("stream event %d after %d: want contiguous ids", ev.ID, last)
		}
		last = ev.ID
	}
}
