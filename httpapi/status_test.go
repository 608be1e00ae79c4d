package httpapi_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
)

// statusFixture is an indexer over a network with one healthy host and one
// whose getRepo always fails, a durable consumer that stopped reading, and
// a server whose status sampler runs every 200 ms.
type statusFixture struct {
	net        *testnet.Network
	ix         *cistern.Indexer
	srv        *httptest.Server
	alice      *testnet.Account
	down       *testnet.Account
	downHost   string
	consumer   string
	sub        *stream.Subscription
	stopWrites func()
}

func newStatusFixture(t *testing.T) *statusFixture {
	t.Helper()
	net := testnet.New(t, testnet.WithHosts(2))
	f := &statusFixture{net: net, consumer: "slow-app"}
	f.alice = net.Account(t, "alice.test", testnet.Records("app.bsky.feed.post", 200))
	bob := net.Account(t, "bob.test", testnet.Records("app.bsky.feed.post", 200))
	var err error
	if f.down, err = net.Host(1).CreateAccount("down.test", testnet.Records("app.bsky.feed.post", 5)); err != nil {
		t.Fatal(err)
	}
	net.Host(1).FailNext("com.atproto.sync.getRepo", 1_000_000, 503)
	f.downHost = strings.TrimPrefix(net.Host(1).URL(), "http://")
	f.ix = openIndexer(t, net, filter.Spec{DIDs: []string{f.alice.DID().String(), bob.DID().String(), f.down.DID().String()}})
	waitSynced(t, f.ix, f.alice.DID().String(), bob.DID().String())

	// A durable consumer reads and acknowledges one event, then stops.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sub, err := f.ix.Subscribe(ctx, stream.SubscribeOptions{Name: f.consumer})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-sub.Events()
	if err := sub.Ack(ctx, ev.ID); err != nil {
		t.Fatal(err)
	}
	f.sub = sub

	api := httpapi.New(f.ix, httpapi.Options{Logger: quiet,
		Status: httpapi.StatusOptions{Interval: 200 * time.Millisecond, StallAfter: time.Second}})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); api.Status().Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	f.srv = httptest.NewServer(api)
	t.Cleanup(f.srv.Close)

	// Live writes, so that the charts have something to draw.
	wctx, stopWrites := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		for i := 0; wctx.Err() == nil; i++ {
			if _, err := f.alice.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", fmt.Sprintf("live %d", i))); err != nil {
				return
			}
			select {
			case <-wctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	f.stopWrites = func() { stopWrites(); <-wdone }
	t.Cleanup(f.stopWrites)
	return f
}

func (f *statusFixture) report(t *testing.T, query string) httpapi.StatusReport {
	t.Helper()
	a := get(t, f.srv.URL+"/status.json"+query)
	if a.Status != 200 {
		t.Fatalf("status.json: %d %s", a.Status, a.Body)
	}
	var r httpapi.StatusReport
	a.decode(t, &r)
	return r
}

func TestStatusJSON_SaysWhatIsFailingAndWhatLags(t *testing.T) {
	f := newStatusFixture(t)
	var r httpapi.StatusReport
	waitFor(t, "a failing host, a stalled consumer and throughput in status.json", func() bool {
		r = f.report(t, "")
		thr := false
		for _, s := range r.History.Samples {
			thr = thr || (s.RecordsPerSecond > 0 && s.EventsPerSecond > 0)
		}
		stalled := len(r.Consumers) == 1 && r.Consumers[0].Stalled
		return thr && stalled && len(r.Hosts) > 0 && r.Hosts[0].Failing == 1 && len(r.Errors) > 0
	})
	if r.Version != httpapi.StatusVersion || r.Health != "warning" || len(r.Problems) < 2 {
		t.Fatalf("version %d health %q problems %q, want a warning naming the failing repo and the stalled consumer", r.Version, r.Health, r.Problems)
	}
	h := r.Hosts[0]
	if h.Host != f.downHost || !strings.Contains(h.Reason, "503") || h.LastError == nil || h.LastError.DID != f.down.DID().String() {
		t.Fatalf("worst host %+v, want %s failing with its 503", h, f.downHost)
	}
	c := r.Consumers[0]
	if c.Name != f.consumer || c.Kind != "stream" || c.LagEvents == 0 || c.LagSeconds <= 0 || c.LastAckAgeSeconds < 1 {
		t.Fatalf("consumer %+v, want slow-app lagging", c)
	}
	e := r.Errors[0]
	if e.Kind != "backfill" || e.Repo != f.down.DID().String() || e.Host != f.downHost || e.Reason != "http" {
		t.Fatalf("last error %+v, want down.test's backfill failure", e)
	}
	if len(r.Firehose) != 1 || r.Firehose[0].Messages == 0 || r.Firehose[0].Cursor == 0 || r.Firehose[0].LastMessageAgeSeconds < 0 {
		t.Fatalf("firehose %+v", r.Firehose)
	}
	if r.Backfill.Done != 2 || r.Backfill.Total != 3 || r.Store.DiskBytes == 0 {
		t.Fatalf("backfill %+v store %+v", r.Backfill, r.Store)
	}
	if r.History.IntervalSeconds != 0.2 {
		t.Fatalf("interval %v", r.History.IntervalSeconds)
	}
	for _, want := range []string{"repo(s) failing backfill", "consumer slow-app is"} {
		if !strings.Contains(strings.Join(r.Problems, "\n"), want) {
			t.Fatalf("problems %q lack %q", r.Problems, want)
		}
	}

	// The consumer catches up: it is no longer stalled.
	f.stopWrites()
	ctx, sub := context.Background(), f.sub
	waitFor(t, "the consumer caught up", func() bool {
		for {
			select {
			case ev := <-sub.Events():
				if err := sub.Ack(ctx, ev.ID); err != nil {
					t.Fatal(err)
				}
				continue
			default:
			}
			break
		}
		r := f.report(t, "")
		return len(r.Consumers) == 1 && r.Consumers[0].LagEvents == 0 && !r.Consumers[0].Stalled
	})
}

func TestStatusJSON_BadHostsParameter(t *testing.T) {
	net := testnet.New(t)
	ix := openIndexer(t, net, filter.Spec{})
	srv := serve(t, ix, httpapi.Options{})
	for _, q := range []string{"0", "-1", "1001", "many", "1e3"} {
		a := get(t, srv.URL+"/status.json?hosts="+q)
		if a.Status != 400 || a.errName() != "InvalidRequest" || !strings.Contains(a.errMessage(), "hosts must be a whole number from 1 to 1000") {
			t.Fatalf("hosts=%s: %d %s", q, a.Status, a.Body)
		}
	}
	a := get(t, srv.URL+"/status.json?hosts=1000")
	if a.Status != 200 {
		t.Fatalf("hosts=1000: %d %s", a.Status, a.Body)
	}
	// Without Run there is no history yet, but every list is there.
	var raw map[string]any
	a.decode(t, &raw)
	for _, k := range []string{"firehose", "hosts", "consumers", "errors", "work", "problems", "recentRejects"} {
		if _, ok := raw[k].([]any); !ok {
			t.Fatalf("%s is %v, want a list (never null)", k, raw[k])
		}
	}
	page := get(t, srv.URL+"/status")
	if page.Status != 200 || !strings.Contains(string(page.Body), "<title>cistern status</title>") ||
		!strings.Contains(page.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("status page: %d %v %.200s", page.Status, page.Header, page.Body)
	}
	for _, external := range []string{"src=\"http", "href=\"http", "@import", "url(http"} {
		if strings.Contains(string(page.Body), external) {
			t.Fatalf("status page refers to something outside it: %q", external)
		}
	}
}
