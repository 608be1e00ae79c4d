package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// openIndexer opens an Indexer on a fresh store that follows net, runs it
// until the test ends, and closes it.
func openIndexer(t *testing.T, net *testnet.Network, spec filter.Spec) *cistern.Indexer {
	t.Helper()
	ix, err := cistern.Open(cistern.Config{
		Path:                   t.TempDir() + "/c.db",
		RelayURL:               net.RelayURL(),
		PLCURL:                 net.PLCURL(),
		SkipHandleVerification: true,
		Logger:                 quiet,
		Filter:                 spec,
		Backfill:               cistern.BackfillConfig{MinBackoff: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("open indexer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("indexer Run: %v", err)
		}
		if err := ix.Close(); err != nil {
			t.Errorf("indexer Close: %v", err)
		}
	})
	return ix
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// waitSynced waits for every DID's backfill.
func waitSynced(t *testing.T, ix *cistern.Indexer, dids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, did := range dids {
		if err := ix.WaitSynced(ctx, did); err != nil {
			t.Fatalf("WaitSynced %s: %v", did, err)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serve starts an httptest server for an httpapi.Server over ix.
func serve(t *testing.T, ix *cistern.Indexer, opts httpapi.Options) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(httpapi.New(ix, opts))
	t.Cleanup(srv.Close)
	return srv
}

// answer is one HTTP answer.
type answer struct {
	Status int
	Body   []byte
	Header http.Header
}

// errName returns the "error" field of an error body.
func (a answer) errName() string {
	var e httpapi.Error
	_ = json.Unmarshal(a.Body, &e)
	return e.Name
}

// errMessage returns the "message" field of an error body.
func (a answer) errMessage() string {
	var e httpapi.Error
	_ = json.Unmarshal(a.Body, &e)
	return e.Message
}

// decode unmarshals the body into v, failing t.
func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Body, v); err != nil {
		t.Fatalf("decode %s: %v", a.Body, err)
	}
}

// normalized returns the body as canonical JSON (keys sorted).
func (a answer) normalized(t *testing.T) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(a.Body, &v); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, a.Body)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func do(t *testing.T, method, u, token string, body []byte) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return answer{Status: resp.StatusCode, Body: b, Header: resp.Header}
}

func get(t *testing.T, u string) answer { t.Helper(); return do(t, http.MethodGet, u, "", nil) }

// xrpc calls method on base with the given query parameters (name, value
// pairs).
func xrpc(t *testing.T, base, method string, kv ...string) answer {
	t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Add(kv[i], kv[i+1])
	}
	u := base + "/xrpc/" + method
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return get(t, u)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newRecorder serves one request to h in memory.
func newRecorder(h http.Handler, method, path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://127.0.0.1"+path, nil)
	req.URL.Path = path
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
