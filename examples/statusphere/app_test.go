package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/testnet"
)

// sse reads status events from /events.
type sse struct {
	t    *testing.T
	body io.ReadCloser
	sc   *bufio.Scanner
	got  chan Status
}

func openSSE(t *testing.T, ctx context.Context, url string) *sse {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("/events content type %q", ct)
	}
	s := &sse{t: t, body: resp.Body, sc: bufio.NewScanner(resp.Body), got: make(chan Status, 64)}
	go func() {
		defer close(s.got)
		event := ""
		for s.sc.Scan() {
			line := s.sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "status":
				var st Status
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &st) == nil {
					s.got <- st
				}
			case line == "":
				event = ""
			}
		}
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// waitStatus reads events until one for did says status.
func (s *sse) waitStatus(did, status string) Status {
	s.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case st, ok := <-s.got:
			if !ok {
				s.t.Fatalf("event stream ended before %s said %s", did, status)
			}
			if st.DID == did && st.Status == status {
				return st
			}
		case <-timeout:
			s.t.Fatalf("no event with %s saying %s", did, status)
		}
	}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func post(t *testing.T, a *testnet.Account, status string, at time.Time) testnet.Record {
	t.Helper()
	v, err := StatusRecord(status, at)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := a.CreateRecord(Collection, v)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// Against a test network: a user who posted a status before the app
// started is found by discovery, a user who posts one later is picked up
// from the firehose (the signal), and the page and the event stream follow
// every change.
func TestStatusphere(t *testing.T) {
	net := testnet.New(t)
	bob := net.Account(t, "bob.test")
	post(t, bob, "☕", time.Now().Add(-time.Hour))
	net.Account(t, "quiet.test", testnet.Records("app.bsky.feed.post", 3)) // never posts a status

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := cistern.Config{Path: t.TempDir() + "/s.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(),
		Filter: Spec, SkipHandleVerification: true, Logger: log,
		Backfill: cistern.BackfillConfig{MinBackoff: 50 * time.Millisecond}}
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	app := NewApp(ix, log)
	errc := make(chan error, 2)
	go func() { errc <- ix.Run(ctx) }()
	go func() { errc <- app.Run(ctx) }()
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		for range 2 {
			if err := <-errc; err != nil {
				t.Errorf("run: %v", err)
			}
		}
		if err := ix.Close(); err != nil {
			t.Error(err)
		}
	})
	events := openSSE(t, ctx, srv.URL)

	// Bob's earlier status arrives through discovery and backfill.
	st := events.waitStatus(bob.DID().String(), "☕")
	if st.Handle != "bob.test" {
		t.Fatalf("bob's handle %q", st.Handle)
	}

	// Alice is not tracked until she posts; then her status shows up live.
	alice := net.Account(t, "alice.test")
	rec := post(t, alice, "🦋", time.Now())
	st = events.waitStatus(alice.DID().String(), "🦋")
	if st.Handle != "alice.test" || st.URI != "at://"+alice.DID().String()+"/"+Collection+"/"+rec.RKey {
		t.Fatalf("alice's status %+v", st)
	}
	page := getBody(t, srv.URL+"/")
	for _, want := range []string{"🦋", "alice.test", "☕", "bob.test", `new EventSource("/events")`} {
		if !strings.Contains(page, want) {
			t.Fatalf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "quiet.test") {
		t.Fatal("a user without a status is listed")
	}
	if strings.Index(page, "🦋") > strings.Index(page, "☕") {
		t.Fatal("the newest status is not first")
	}

	// A newer status replaces the old one; deleting it falls back to the
	// previous one.
	newer := post(t, alice, "🚀", time.Now())
	events.waitStatus(alice.DID().String(), "🚀")
	var list []Status
	if err := json.Unmarshal([]byte(getBody(t, srv.URL+"/api/statuses")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].DID != alice.DID().String() || list[0].Status != "🚀" || list[1].Status != "☕" {
		t.Fatalf("/api/statuses %+v", list)
	}
	if err := alice.DeleteRecord(Collection, newer.RKey); err != nil {
		t.Fatal(err)
	}
	events.waitStatus(alice.DID().String(), "🦋")

	// A handle change reaches the page.
	if _, err := alice.SetHandle("alice2.test"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(getBody(t, srv.URL+"/"), "alice2.test") {
		if time.Now().After(deadline) {
			t.Fatal("the new handle never reached the page")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Ready closes even when the newest event at start is not a status event
// (here an account event), which the app's subscription filters out.
func TestReadyWhenTheNewestEventIsFilteredOut(t *testing.T) {
	net := testnet.New(t)
	bob := net.Account(t, "bob.test")
	post(t, bob, "☕", time.Now().Add(-time.Hour))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := cistern.Config{Path: t.TempDir() + "/s.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(),
		Filter: Spec, SkipHandleVerification: true, Logger: log, NoCrawl: true}
	cfg.Filter.DIDs = []string{bob.DID().String()}
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := net.Relay().Connections()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ix.Run(ctx) }()
	defer func() {
		cancel()
		<-errc
		ix.Close()
	}()
	if err := ix.WaitSynced(ctx, bob.DID().String()); err != nil {
		t.Fatal(err)
	}
	// The deactivation must be seen live: the firehose starts beside the
	// backfill, so a repo can be synced before the firehose is connected.
	connected := time.Now().Add(10 * time.Second)
	for net.Relay().Connections() <= before {
		if time.Now().After(connected) {
			t.Fatal("the firehose never connected to the relay")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := bob.Deactivate(); err != nil { // the newest event: an account event
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := ix.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Repos["deactivated"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deactivation not applied: %v", st.Repos)
		}
		time.Sleep(10 * time.Millisecond)
	}
	app := NewApp(ix, log)
	appCtx, stopApp := context.WithCancel(ctx)
	defer stopApp()
	go app.Run(appCtx)
	select {
	case <-app.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("Ready never closed: it waits for a status event newer than the newest event")
	}
}
