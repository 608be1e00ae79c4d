package tapcompat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/tapcompat"
	"github.com/cistern-dev/cistern/testnet"
)

// serveTap runs an indexer following tn, a tapcompat Service in ack mode
// and the HTTP API with the admin password, until the test ends.
func serveTap(t *testing.T, tn *testnet.Network, password string, mods ...func(*tapcompat.Options)) (*httptest.Server, *tapcompat.Service) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ix, err := cistern.Open(cistern.Config{
		Path:                   t.TempDir() + "/c.db",
		RelayURL:               tn.RelayURL(),
		PLCURL:                 tn.PLCURL(),
		SkipHandleVerification: true,
		Logger:                 quiet,
		Backfill:               cistern.BackfillConfig{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := tapcompat.Options{SaveInterval: 20 * time.Millisecond, Sources: []string{tn.RelayURL()}, Logger: quiet}
	for _, m := range mods {
		m(&opts)
	}
	tap, err := tapcompat.New(ix, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone, tapDone := make(chan error, 1), make(chan error, 1)
	go func() { runDone <- ix.Run(ctx) }()
	go func() { tapDone <- tap.Run(ctx) }()
	srv := httptest.NewServer(httpapi.New(ix, httpapi.Options{AdminPassword: password, Tap: tap, Logger: quiet}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-tapDone; err != nil {
			t.Errorf("tap Run: %v", err)
		}
		if err := <-runDone; err != nil {
			t.Errorf("indexer Run: %v", err)
		}
		if err := ix.Close(); err != nil {
			t.Errorf("indexer Close: %v", err)
		}
	})
	return srv, tap
}

// dialChannel opens /channel with Basic admin auth.
func dialChannel(t *testing.T, base, password string) *websocket.Conn {
	t.Helper()
	h := http.Header{}
	if password != "" {
		req, _ := http.NewRequest(http.MethodGet, base, nil)
		req.SetBasicAuth("admin", password)
		h.Set("Authorization", req.Header.Get("Authorization"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/channel", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /channel: %v (HTTP %d)", err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// rawEvent is a /channel frame with the fields cistern adds.
type rawEvent struct {
	ID       uint64 `json:"id"`
	Type     string `json:"type"`
	Identity *struct {
		DID      string `json:"did"`
		Handle   string `json:"handle"`
		IsActive bool   `json:"is_active"`
		Status   string `json:"status"`
		State    string `json:"state"`
		Error    string `json:"error"`
	} `json:"identity"`
	Record *struct {
		DID  string `json:"did"`
		Live bool   `json:"live"`
	} `json:"record"`
}

// readAck reads one frame and acks it.
func readAck(t *testing.T, c *websocket.Conn) rawEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read /channel: %v", err)
	}
	var e rawEvent
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("frame %s: %v", data, err)
	}
	if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"ack","id":%d}`, e.ID)); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestChannel_FailedSyncReachesConsumers: a repo whose backfill fails is
// announced on /channel as an identity event of the repo carrying
// "state":"error" and the reason, and /info says the same; once the host
// answers again, the backfill follows.
func TestChannel_FailedSyncReachesConsumers(t *testing.T) {
	const password = "pw"
	tn := testnet.New(t)
	alice := tn.Account(t, "alice.test", testnet.Records(post, 2))
	tn.Host(0).FailNext("com.atproto.sync.getRepo", 1000, http.StatusBadGateway)
	srv, _ := serveTap(t, tn, password)

	if c, resp, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/channel", nil); err == nil {
		c.CloseNow()
		t.Fatal("/channel accepted a client without the admin password")
	} else if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/channel without credentials: %v, want 401", err)
	}
	c := dialChannel(t, srv.URL, password)
	if code := request(t, http.MethodPost, srv.URL+"/repos/add", password, map[string]any{"dids": []string{alice.DID().String()}}, nil); code != http.StatusOK {
		t.Fatalf("/repos/add answered %d", code)
	}
	e := readAck(t, c)
	if e.Type != "identity" || e.Identity == nil || e.Identity.DID != alice.DID().String() || e.Identity.State != "error" ||
		!strings.HasPrefix(e.Identity.Error, "http: ") || !strings.Contains(e.Identity.Error, "502") ||
		e.Identity.Status != "active" || !e.Identity.IsActive || e.Identity.Handle == "" {
		t.Fatalf("first event %+v %+v, want alice's failed sync as an identity event", e, e.Identity)
	}
	var info tapcompat.RepoInfo
	request(t, http.MethodGet, srv.URL+"/info/"+alice.DID().String(), password, nil, &info)
	if (info.State != "error" && info.State != "resyncing" && info.State != "pending") || info.Retries == 0 {
		t.Fatalf("/info = %+v, want the failing repo with its retries", info)
	}

	tn.Host(0).ClearFaults()
	records := 0
	for records < 2 {
		e := readAck(t, c)
		switch {
		case e.Record != nil:
			records++
		case e.Identity != nil && e.Identity.State == "error":
			// another failed attempt before the faults were cleared
		default:
			t.Fatalf("unexpected event %+v", e)
		}
	}
	waitUntilT(t, "alice synced", func() bool {
		info = tapcompat.RepoInfo{}
		request(t, http.MethodGet, srv.URL+"/info/"+alice.DID().String(), password, nil, &info)
		return info.State == "active" && info.Error == "" && info.Retries == 0 && info.Records == 2
	})

	// The stats endpoints, once a live commit has gone through.
	if _, err := alice.CreateRecord(post, testnet.Post(post, "live")); err != nil {
		t.Fatal(err)
	}
	if e := readAck(t, c); e.Record == nil || !e.Record.Live {
		t.Fatalf("event %+v, want the live record", e)
	}
	for _, tt := range []struct {
		path string
		key  string
		want func(int64) bool
	}{
		{"/stats/repo-count", "repo_count", func(n int64) bool { return n == 1 }},
		{"/stats/record-count", "record_count", func(n int64) bool { return n == 3 }},
		{"/stats/resync-buffer", "resync_buffer", func(n int64) bool { return n == 0 }},
		{"/stats/outbox-buffer", "outbox_buffer", func(n int64) bool { return n == 0 }},
		{"/stats/cursors", "firehose", func(n int64) bool { return n > 0 }},
	} {
		waitUntilT(t, tt.path, func() bool {
			var m map[string]int64
			code := request(t, http.MethodGet, srv.URL+tt.path, password, nil, &m)
			v, ok := m[tt.key]
			return code == http.StatusOK && ok && tt.want(v)
		})
	}
	if code := request(t, http.MethodGet, srv.URL+"/info/did:plc:nobodyhere", password, nil, nil); code != http.StatusNotFound {
		t.Fatalf("/info of an unknown DID answered %d, want 404", code)
	}
	if code := request(t, http.MethodGet, srv.URL+"/info/not-a-did", password, nil, nil); code != http.StatusBadRequest {
		t.Fatalf("/info of a bad DID answered %d, want 400", code)
	}
	if code := request(t, http.MethodGet, srv.URL+"/stats/repo-count", "wrong", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("a wrong password answered %d, want 401", code)
	}
}

// TestChannel_FireAndForget: with acks disabled an event counts as
// delivered once written, so a client that never acks still moves the
// position, and its next connection gets only new events.
func TestChannel_FireAndForget(t *testing.T) {
	tn := testnet.New(t)
	alice := tn.Account(t, "alice.test", testnet.Records(post, 3))
	srv, tap := serveTap(t, tn, "pw", func(o *tapcompat.Options) { o.DisableAcks = true })
	if tap.Mode() != tapcompat.ModeFireAndForget {
		t.Fatalf("mode %s", tap.Mode())
	}
	c := dialChannel(t, srv.URL, "pw")
	if code := request(t, http.MethodPost, srv.URL+"/repos/add", "pw", map[string]any{"dids": []string{alice.DID().String()}}, nil); code != http.StatusOK {
		t.Fatalf("/repos/add answered %d", code)
	}
	waitIndexed(t, srv.URL, "pw", []*testnet.Account{alice})
	n := newestEvent(t, srv.URL, "pw")
	read := func(c *websocket.Conn) rawEvent {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read /channel: %v", err)
		}
		var e rawEvent
		if err := json.Unmarshal(data, &e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	for i := uint64(1); i <= n; i++ {
		if e := read(c); e.ID != i {
			t.Fatalf("event %d, want %d", e.ID, i)
		}
	}
	waitUntilT(t, "the position at the newest event", func() bool {
		st, err := tap.Stats(context.Background())
		return err == nil && st.Acked == n && st.Lag == 0 && st.Pending == 0
	})
	c.CloseNow()
	waitUntilT(t, "the server to see the client go", func() bool {
		st, err := tap.Stats(context.Background())
		return err == nil && st.Clients == 0
	})
	rec, err := alice.CreateRecord(post, testnet.Post(post, "after"))
	if err != nil {
		t.Fatal(err)
	}
	c2 := dialChannel(t, srv.URL, "pw")
	if e := read(c2); e.ID != n+1 || e.Record == nil || !e.Record.Live {
		t.Fatalf("next connection got %+v, want only the new live record %s (id %d)", e, rec.RKey, n+1)
	}
}
