package tapcompat_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/tapcompat"
	"github.com/cistern-dev/cistern/testnet"
)

// Environment of TestServerChild, the cistern server the tests start as a
// child process so that they can kill it.
const (
	envChildDB       = "CISTERN_TAP_CHILD_DB"
	envChildAddr     = "CISTERN_TAP_CHILD_ADDR"
	envChildRelay    = "CISTERN_TAP_CHILD_RELAY"
	envChildPLC      = "CISTERN_TAP_CHILD_PLC"
	envChildWebhook  = "CISTERN_TAP_CHILD_WEBHOOK"
	envChildPassword = "CISTERN_TAP_CHILD_PASSWORD"
	envChildRetry    = "CISTERN_TAP_CHILD_RETRY"
)

// TestServerChild is the child process of the restart tests: cistern's
// server (indexer, httpapi, tapcompat) on a given address and store,
// following a test network, until SIGTERM (a clean stop) or SIGKILL.
func TestServerChild(t *testing.T) {
	db := os.Getenv(envChildDB)
	if db == "" {
		t.Skip("child process of the tapcompat restart tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ix, err := cistern.Open(cistern.Config{
		Path:                   db,
		RelayURL:               os.Getenv(envChildRelay),
		PLCURL:                 os.Getenv(envChildPLC),
		SkipHandleVerification: true,
		CursorInterval:         20 * time.Millisecond,
		Backfill:               cistern.BackfillConfig{MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
		Logger:                 log,
	})
	if err != nil {
		t.Fatal(err)
	}
	retry, _ := time.ParseDuration(os.Getenv(envChildRetry))
	password := os.Getenv(envChildPassword)
	tap, err := tapcompat.New(ix, tapcompat.Options{
		WebhookURL:        os.Getenv(envChildWebhook),
		AdminPassword:     password,
		RetryTimeout:      retry,
		SaveInterval:      20 * time.Millisecond,
		WebhookMinBackoff: 50 * time.Millisecond,
		WebhookMaxBackoff: 400 * time.Millisecond,
		Sources:           []string{os.Getenv(envChildRelay)},
		Logger:            log,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: httpapi.New(ix, httpapi.Options{AdminPassword: password, Tap: tap, Logger: log})}
	ln, err := net.Listen("tcp", os.Getenv(envChildAddr))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- ix.Run(runCtx) }()
	tapCtx, cancelTap := context.WithCancel(context.Background())
	tapDone := make(chan error, 1)
	go func() { tapDone <- tap.Run(tapCtx) }()
	go func() { _ = srv.Serve(ln) }()
	fmt.Println("READY")
	<-ctx.Done()
	_ = srv.Shutdown(context.Background())
	cancelTap()
	if err := <-tapDone; err != nil {
		t.Error(err)
	}
	cancelRun()
	if err := <-runDone; err != nil {
		t.Error(err)
	}
	if err := ix.Close(); err != nil {
		t.Error(err)
	}
}

// child is a running TestServerChild.
type child struct {
	t    *testing.T
	env  []string
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// childOptions say how to start a child.
type childOptions struct {
	Webhook  string
	Password string
	Retry    time.Duration
}

// freeAddr returns a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startChild starts a cistern server over a new store following net.
func startChild(t *testing.T, tn *testnet.Network, o childOptions) *child {
	t.Helper()
	if testing.Short() {
		t.Skip("starts and kills child processes")
	}
	c := &child{t: t, addr: freeAddr(t)}
	c.env = append(os.Environ(),
		envChildDB+"="+t.TempDir()+"/cistern.db",
		envChildAddr+"="+c.addr,
		envChildRelay+"="+tn.RelayURL(),
		envChildPLC+"="+tn.PLCURL(),
		envChildWebhook+"="+o.Webhook,
		envChildPassword+"="+o.Password,
		envChildRetry+"="+o.Retry.String(),
	)
	c.start()
	t.Cleanup(func() { c.stop(syscall.SIGKILL) })
	return c
}

// URL is the server's base URL.
func (c *child) URL() string { return "http://" + c.addr }

func (c *child) start() {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerChild$", "-test.count=1", "-test.v")
	cmd.Env = c.env
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	ready := make(chan bool, 1)
	c.cmd, c.done = cmd, make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && sc.Text() == "READY" {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		_ = cmd.Wait()
		close(c.done)
	}()
	select {
	case ok := <-ready:
		if !ok {
			c.t.Fatal("cistern child exited before it was ready")
		}
	case <-time.After(60 * time.Second):
		c.t.Fatal("cistern child not ready after 60s")
	}
}

// stop sends sig and waits for the child to exit.
func (c *child) stop(sig syscall.Signal) {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.t.Errorf("cistern child did not stop on %v within 30s", sig)
	}
	c.cmd = nil
}

// restart stops the child with sig and starts it again on the same
// address and store.
func (c *child) restart(sig syscall.Signal) {
	c.t.Helper()
	c.stop(sig)
	c.start()
}

// request does an HTTP request with Basic admin auth when password is set
// and decodes a JSON answer into out (when not nil).
func request(t *testing.T, method, url, password string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if password != "" {
		req.SetBasicAuth("admin", password)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, b)
		}
	}
	return resp.StatusCode
}

// tapEvent is the part of a tap event the tests look at.
type tapEvent struct {
	ID     uint64 `json:"id"`
	Type   string `json:"type"`
	Record *struct {
		Live       bool   `json:"live"`
		DID        string `json:"did"`
		Collection string `json:"collection"`
		RKey       string `json:"rkey"`
		Action     string `json:"action"`
	} `json:"record"`
	Identity *struct {
		DID      string `json:"did"`
		Handle   string `json:"handle"`
		IsActive bool   `json:"is_active"`
		Status   string `json:"status"`
	} `json:"identity"`
}

func (e *tapEvent) did() string {
	if e.Record != nil {
		return e.Record.DID
	}
	if e.Identity != nil {
		return e.Identity.DID
	}
	return ""
}

// receipts collects the events a consumer processed, in order.
type receipts struct {
	mu     sync.Mutex
	events []tapEvent
	seen   map[uint64]bool
}

func (r *receipts) add(e tapEvent) (first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[uint64]bool{}
	}
	first = !r.seen[e.ID]
	r.seen[e.ID] = true
	r.events = append(r.events, e)
	return first
}

func (r *receipts) has(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[id]
}

func (r *receipts) snapshot() []tapEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tapEvent(nil), r.events...)
}

// newestEvent asks the server for the id of its newest event.
func newestEvent(t *testing.T, base, password string) uint64 {
	t.Helper()
	var h struct {
		NewestEvent uint64 `json:"newestEvent"`
	}
	if code := request(t, http.MethodGet, base+"/health", password, nil, &h); code != http.StatusOK {
		t.Fatalf("/health answered %d", code)
	}
	return h.NewestEvent
}

// checkComplete fails unless every id from 1 to newest was processed.
func checkComplete(t *testing.T, got []tapEvent, newest uint64) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, e := range got {
		seen[e.ID] = true
	}
	var missing []uint64
	for id := uint64(1); id <= newest; id++ {
		if !seen[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d events never processed: %v", len(missing), newest, missing)
	}
}

// checkRepoOrder checks tap's per-repo order on the first processing of
// each event: a live event comes after every earlier event of its repo and
// before every later one.
func checkRepoOrder(t *testing.T, got []tapEvent) {
	t.Helper()
	type item struct {
		id   uint64
		live bool
	}
	byRepo := map[string][]item{}
	first := map[uint64]bool{}
	for _, e := range got {
		if first[e.ID] {
			continue
		}
		first[e.ID] = true
		live := e.Record != nil && e.Record.Live
		byRepo[e.did()] = append(byRepo[e.did()], item{e.ID, live})
	}
	for did, items := range byRepo {
		for i, it := range items {
			if !it.live {
				continue
			}
			for j, other := range items {
				if j < i && other.id > it.id || j > i && other.id < it.id {
					t.Fatalf("repo %s: live event %d processed at %d, event %d at %d: out of order (%v)",
						did, it.id, i, other.id, j, items)
				}
			}
		}
	}
}
