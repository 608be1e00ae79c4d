package tapcompat_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/tapcompat"
	"github.com/cistern-dev/cistern/testnet"
)

const post = "app.bsky.feed.post"

// hook is a webhook target that can be told to fail.
type hook struct {
	srv      *httptest.Server
	failing  atomic.Bool
	requests atomic.Int64
	failed   atomic.Int64
	got      receipts
}

func newHook(t *testing.T, password string) *hook {
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := h.requests.Add(1)
		if user, pass, ok := r.BasicAuth(); password != "" && (!ok || user != "admin" || pass != password) {
			t.Errorf("webhook request without the admin credentials")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		// Down, or flaky: every 7th request fails.
		if h.failing.Load() || n%7 == 0 {
			h.failed.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var e tapEvent
		if err := json.Unmarshal(body, &e); err != nil || e.ID == 0 {
			t.Errorf("webhook body is not a tap event: %v: %s", err, body)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h.got.add(e)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func writePosts(t *testing.T, accts []*testnet.Account, n int, text string) {
	t.Helper()
	for i := range n {
		for _, a := range accts {
			if _, err := a.CreateRecord(post, testnet.Post(post, fmt.Sprintf("%s %d", text, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// waitIndexed waits until the server has indexed each account's latest
// commit, as its /info says.
func waitIndexed(t *testing.T, base, password string, accts []*testnet.Account) {
	t.Helper()
	for _, a := range accts {
		waitUntilT(t, "indexed "+a.DID().String(), func() bool {
			var info tapcompat.RepoInfo
			code := request(t, http.MethodGet, base+"/info/"+a.DID().String(), password, nil, &info)
			return code == http.StatusOK && info.State == "active" && info.Rev == a.Rev()
		})
	}
}

// waitAll waits until the consumer has processed every event the server
// has, then checks completeness and per-repo order.
func waitAll(t *testing.T, got *receipts, base, password string) []tapEvent {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		newest := newestEvent(t, base, password)
		done := newest > 0
		for id := uint64(1); done && id <= newest; id++ {
			done = got.has(id)
		}
		if done {
			events := got.snapshot()
			checkComplete(t, events, newest)
			checkRepoOrder(t, events)
			return events
		}
		if time.Now().After(deadline) {
			checkComplete(t, got.snapshot(), newest)
			t.Fatal("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWebhook_FailsRecoversAndSurvivesSIGKILL delivers to a webhook that
// is down, then flaky, across a SIGKILL and a clean restart of cistern:
// every event reaches it, with tap's per-repo order, and with the admin
// password as Basic auth.
func TestWebhook_FailsRecoversAndSurvivesSIGKILL(t *testing.T) {
	const password = "hunter2"
	tn := testnet.New(t)
	var accts []*testnet.Account
	var dids []string
	for i := range 3 {
		a := tn.Account(t, fmt.Sprintf("hook%d.test", i), testnet.Records(post, 15))
		accts = append(accts, a)
		dids = append(dids, a.DID().String())
	}
	h := newHook(t, password)
	h.failing.Store(true)
	c := startChild(t, tn, childOptions{Webhook: h.srv.URL, Password: password})

	if code := request(t, http.MethodPost, c.URL()+"/repos/add", "", map[string]any{"dids": dids}, nil); code != http.StatusUnauthorized {
		t.Fatalf("/repos/add without credentials answered %d, want 401", code)
	}
	if code := request(t, http.MethodPost, c.URL()+"/repos/add", password, map[string]any{"dids": dids}, nil); code != http.StatusOK {
		t.Fatalf("/repos/add answered %d", code)
	}
	if code := request(t, http.MethodGet, c.URL()+"/channel", password, nil, nil); code != http.StatusBadRequest {
		t.Fatalf("/channel in webhook mode answered %d, want 400", code)
	}
	writePosts(t, accts, 2, "while the hook is down")
	waitUntilT(t, "failed webhook posts", func() bool { return h.failed.Load() >= 10 })
	if n := len(h.got.snapshot()); n != 0 {
		t.Fatalf("%d events processed while the hook was down", n)
	}
	waitUntilT(t, "redeliveries in /stats", func() bool {
		var stats struct {
			Tap struct {
				Name        string `json:"name"`
				Redelivered int64  `json:"redelivered"`
			} `json:"tap"`
		}
		request(t, http.MethodGet, c.URL()+"/stats", password, nil, &stats)
		if stats.Tap.Name != "tap.webhook" {
			t.Fatalf("/stats tap = %+v, want the outbox tap.webhook", stats.Tap)
		}
		return stats.Tap.Redelivered > 0
	})

	h.failing.Store(false)
	waitUntilT(t, "some deliveries", func() bool { return len(h.got.snapshot()) >= 10 })
	c.restart(syscall.SIGKILL)
	writePosts(t, accts, 2, "after the kill")
	h.failing.Store(true)
	time.Sleep(300 * time.Millisecond)
	h.failing.Store(false)
	if _, err := accts[0].SetHandle("renamed0.test"); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, c.URL(), password, accts)
	waitAll(t, &h.got, c.URL(), password)

	c.restart(syscall.SIGTERM)
	writePosts(t, accts, 1, "after the clean restart")
	waitIndexed(t, c.URL(), password, accts)
	events := waitAll(t, &h.got, c.URL(), password)

	var live, backfill, identity int
	for _, e := range events {
		switch {
		case e.Identity != nil:
			identity++
		case e.Record.Live:
			live++
		default:
			backfill++
		}
	}
	// Posts written after a restart come live or, when the kill lost the
	// firehose cursor, from a resync; those after the clean restart are live.
	if backfill < 45 || live < 3 || backfill+live < 60 || identity == 0 {
		t.Fatalf("processed %d backfill, %d live and %d identity events; want 60 records (45 backfilled, 3 live) and an identity event",
			backfill, live, identity)
	}
	waitUntilT(t, "an empty outbox buffer", func() bool {
		var ob map[string]int64
		request(t, http.MethodGet, c.URL()+"/stats/outbox-buffer", password, nil, &ob)
		return ob["outbox_buffer"] == 0
	})
	var metrics string
	{
		req, _ := http.NewRequest(http.MethodGet, c.URL()+"/metrics", nil)
		req.SetBasicAuth("admin", password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
	}
	for _, m := range []string{`cistern_tap_lag_events{consumer="tap.webhook"} 0`, `cistern_tap_redelivered_total{consumer="tap.webhook"}`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func waitUntilT(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
