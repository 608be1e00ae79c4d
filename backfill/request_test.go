package backfill

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// A host that answers Get with 429 is paused for every request to it,
// Get's and backfill's alike: the next Get is not sent, and the scheduler
// counts the host as rate limited.
func TestGet_429PausesTheHostForEveryone(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"collections":["a.b.c"]}`))
			return
		}
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	now := time.Now()
	s := &Scheduler{opts: Options{HTTPClient: srv.Client(), Now: func() time.Time { return now }}.withDefaults()}
	s.hosts = newHosts(s.opts.PerHost, s.opts.HostInterval, s.opts.Now)
	s.budget = newBudget(s.opts.ByteBudget)
	ctx := context.Background()

	status, body, err := s.Get(ctx, srv.URL+"/xrpc/com.atproto.repo.describeRepo", 1<<10)
	if err != nil || status != http.StatusOK || string(body) != `{"collections":["a.b.c"]}` {
		t.Fatalf("first Get = %d %q %v; want the 200 and its body", status, body, err)
	}
	if _, _, err := s.Get(ctx, srv.URL+"/x", 1<<10); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("Get answered 429 = %v; want ErrRateLimited", err)
	}
	if _, _, err := s.Get(ctx, srv.URL+"/x", 1<<10); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("Get to the paused host = %v; want ErrRateLimited", err)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("host asked %d times; want 2 (none while paused)", n)
	}
	if until := s.hosts.pausedUntil(srv.Listener.Addr().String()); !until.Equal(now.Add(time.Minute)) {
		t.Fatalf("host paused until %v; want %v (Retry-After)", until, now.Add(time.Minute))
	}
	if got := s.Stats().HostsRateLimited; got != 1 {
		t.Fatalf("HostsRateLimited = %d; want 1", got)
	}
	if _, _, err := s.Get(ctx, "ftp://x", 1); err == nil {
		t.Fatal("Get of a non-HTTP URL succeeded")
	}
}
