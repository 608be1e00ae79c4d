package tapcompat_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/tapcompat"
	"github.com/cistern-dev/cistern/testnet"
)

// clientPassword is the admin password of the servers the client tests
// start: adding repos (a mutating call) needs credentials.
const clientPassword = "cl13nt"

// count returns how many event lines match.
func count(ls []clientLine, match func(l clientLine) bool) int {
	n := 0
	for _, l := range ls {
		if match(l) {
			n++
		}
	}
	return n
}

// TestTapClient_AddsReposAndAcksEvents runs npm's @atproto/tap client
// against cistern: it adds repos, receives their backfill, live records,
// a handle change and account status changes as tap's events, acks them,
// and reads /info and /resolve.
func TestTapClient_AddsReposAndAcksEvents(t *testing.T) {
	node := findNode(t)
	const password = "s3cret"
	tn := testnet.New(t)
	alice := tn.Account(t, "alice.test", testnet.Records(post, 5))
	bob := tn.Account(t, "bob.test", testnet.Records(post, 3))
	srv := startChild(t, tn, childOptions{Password: password})
	c := startClient(t, node, srv.URL(), password)

	c.do(map[string]any{"cmd": "add", "dids": []string{alice.DID().String(), bob.DID().String()}})
	c.waitEvents("8 backfill records", func(ls []clientLine) bool {
		return count(ls, func(l clientLine) bool { return l.Acked && l.Event.Type == "record" && !l.Event.Live }) == 8
	})

	rec, err := alice.CreateRecord(post, testnet.Post(post, "hello from the firehose"))
	if err != nil {
		t.Fatal(err)
	}
	ls := c.waitEvents("the live record", func(ls []clientLine) bool {
		return count(ls, func(l clientLine) bool { return l.Event.Live && l.Event.RKey == rec.RKey }) == 1
	})
	for _, l := range ls {
		if l.Event.Live {
			e := l.Event
			if e.DID != alice.DID().String() || e.Collection != post || e.Action != "create" ||
				e.Text != "hello from the firehose" || e.CID != rec.CID.String() {
				t.Fatalf("live record event %+v, want alice's new post with CID %s", e, rec.CID)
			}
		}
	}

	if _, err := alice.SetHandle("alice2.test"); err != nil {
		t.Fatal(err)
	}
	c.waitEvents("alice's new handle", func(ls []clientLine) bool {
		return count(ls, func(l clientLine) bool {
			return l.Event.Type == "identity" && l.Event.DID == alice.DID().String() && l.Event.Handle == "alice2.test" && l.Event.IsActive
		}) > 0
	})
	if _, err := bob.Deactivate(); err != nil {
		t.Fatal(err)
	}
	c.waitEvents("bob deactivated", func(ls []clientLine) bool {
		return count(ls, func(l clientLine) bool {
			return l.Event.Type == "identity" && l.Event.DID == bob.DID().String() && !l.Event.IsActive && l.Event.Status == "deactivated"
		}) == 1
	})
	if _, err := bob.Activate(); err != nil {
		t.Fatal(err)
	}
	c.waitEvents("bob active again", func(ls []clientLine) bool {
		return count(ls, func(l clientLine) bool {
			return l.Event.Type == "identity" && l.Event.DID == bob.DID().String() && l.Event.IsActive && l.Event.Status == "active"
		}) == 1
	})

	waitIndexed(t, srv.URL(), password, []*testnet.Account{alice})
	var info tapcompat.RepoInfo
	if err := json.Unmarshal(c.do(map[string]any{"cmd": "info", "did": alice.DID().String()}).Info, &info); err != nil {
		t.Fatal(err)
	}
	if want := (tapcompat.RepoInfo{DID: alice.DID().String(), Handle: "alice2.test", State: "active", Rev: alice.Rev(), Records: 6}); info != want {
		t.Fatalf("getRepoInfo = %+v, want %+v", info, want)
	}
	var doc struct {
		ID          string   `json:"id"`
		AlsoKnownAs []string `json:"alsoKnownAs"`
	}
	if err := json.Unmarshal(c.do(map[string]any{"cmd": "resolve", "did": alice.DID().String()}).Doc, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ID != alice.DID().String() {
		t.Fatalf("resolveDid = %+v, want alice's document", doc)
	}

	events := waitAll(t, &c.acked, srv.URL(), password)
	for _, l := range c.lines() {
		if !l.Acked {
			t.Fatalf("event %d not acked", l.Event.ID)
		}
	}
	if dup := len(events) - len(slices.CompactFunc(sortedIDs(events), func(a, b uint64) bool { return a == b })); dup != 0 {
		t.Fatalf("%d events delivered twice in one healthy session", dup)
	}
}

func sortedIDs(es []tapEvent) []uint64 {
	ids := make([]uint64, 0, len(es))
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestTapClient_ReconnectRedeliversUnacked: events the client did not ack
// come again on its next connection, and only those.
func TestTapClient_ReconnectRedeliversUnacked(t *testing.T) {
	node := findNode(t)
	tn := testnet.New(t)
	alice := tn.Account(t, "alice.test", testnet.Records(post, 6))
	srv := startChild(t, tn, childOptions{Password: clientPassword})
	c := startClient(t, node, srv.URL(), clientPassword)

	c.do(map[string]any{"cmd": "hold", "n": 3})
	c.do(map[string]any{"cmd": "add", "dids": []string{alice.DID().String()}})
	waitIndexed(t, srv.URL(), clientPassword, []*testnet.Account{alice})
	n := int(newestEvent(t, srv.URL(), clientPassword)) // the 6 records and the handle
	ls := c.waitEvents("every event once", func(ls []clientLine) bool { return len(ls) >= n })
	if len(ls) != n {
		t.Fatalf("%d events delivered, want %d", len(ls), n)
	}
	var held []uint64
	for _, l := range ls {
		if !l.Acked {
			held = append(held, l.Event.ID)
		}
	}
	if len(held) != 3 {
		t.Fatalf("held %v, want 3 events", held)
	}
	c.do(map[string]any{"cmd": "reconnect"})
	ls = c.waitEvents("the held events again", func(ls []clientLine) bool { return len(ls) >= n+3 })
	var again []uint64
	for _, l := range ls[n:] {
		if !l.Acked {
			t.Fatalf("event %d not acked after the reconnect", l.Event.ID)
		}
		again = append(again, l.Event.ID)
	}
	slices.Sort(again)
	if !slices.Equal(again, held) {
		t.Fatalf("redelivered %v, want exactly the unacked %v", again, held)
	}
	waitAll(t, &c.acked, srv.URL(), clientPassword)
}

// TestTapClient_SurvivesRestarts: the client keeps its connection to
// cistern across a SIGKILL and a clean restart (it reconnects by itself);
// events it had not acked come again, nothing is lost, and tap's per-repo
// order holds.
func TestTapClient_SurvivesRestarts(t *testing.T) {
	node := findNode(t)
	tn := testnet.New(t)
	var accts []*testnet.Account
	var dids []string
	for i := range 3 {
		a := tn.Account(t, fmt.Sprintf("user%d.test", i), testnet.Records(post, 10))
		accts = append(accts, a)
		dids = append(dids, a.DID().String())
	}
	srv := startChild(t, tn, childOptions{Password: clientPassword})
	c := startClient(t, node, srv.URL(), clientPassword)
	c.do(map[string]any{"cmd": "hold", "n": 4})
	c.do(map[string]any{"cmd": "add", "dids": dids})
	c.waitEvents("the first events", func(ls []clientLine) bool { return len(ls) >= 10 })
	writePosts(t, accts, 2, "before the kill")

	srv.restart(syscall.SIGKILL)
	writePosts(t, accts, 2, "while down and after")
	waitIndexed(t, srv.URL(), clientPassword, accts)
	events := waitAll(t, &c.acked, srv.URL(), clientPassword)

	var unacked []uint64
	for _, l := range c.lines() {
		if !l.Acked {
			unacked = append(unacked, l.Event.ID)
		}
	}
	if len(unacked) != 4 {
		t.Fatalf("%d unacked events, want the 4 held", len(unacked))
	}
	for _, id := range unacked {
		if !c.acked.has(id) {
			t.Fatalf("held event %d never came again", id)
		}
	}

	srv.restart(syscall.SIGTERM)
	writePosts(t, accts, 1, "after the clean restart")
	waitIndexed(t, srv.URL(), clientPassword, accts)
	events = waitAll(t, &c.acked, srv.URL(), clientPassword)
	if n := count(c.lines(), func(l clientLine) bool { return l.Event.Type == "record" }); n < 45 {
		t.Fatalf("%d record events, want at least the 45 written", n)
	}
	var buf map[string]int64
	waitUntilT(t, "an empty outbox", func() bool {
		request(t, http.MethodGet, srv.URL()+"/stats/outbox-buffer", "", nil, &buf)
		return buf["outbox_buffer"] == 0
	})
	_ = events
}

// TestTapWebhook_NodeReceiver posts to a webhook built on @atproto/tap's
// own helpers (assureAdminAuth, parseTapEvent): every event parses, the
// admin password comes as Basic auth, and the posts it fails at first are
// retried.
func TestTapWebhook_NodeReceiver(t *testing.T) {
	node := findNode(t)
	const password = "w3bh00k"
	cmd := exec.Command(node, "webhook.mjs")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "TAP_PASSWORD="+password, "FAIL_FIRST=5")
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
	var got receipts
	var errs []string
	var mu sync.Mutex
	port := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l struct {
				Port  int        `json:"port"`
				Event *nodeEvent `json:"event"`
				Error string     `json:"error"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("webhook printed %q", sc.Text())
				continue
			}
			switch {
			case l.Port != 0:
				port <- l.Port
			case l.Event != nil:
				got.add(l.Event.tapEvent())
			case l.Error != "":
				mu.Lock()
				errs = append(errs, l.Error)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		<-done
		_ = cmd.Wait()
	})
	var p int
	select {
	case p = <-port:
	case <-time.After(30 * time.Second):
		t.Fatal("the webhook did not start")
	}

	tn := testnet.New(t)
	alice := tn.Account(t, "alice.test", testnet.Records(post, 4))
	bob := tn.Account(t, "bob.test", testnet.Records(post, 2))
	srv := startChild(t, tn, childOptions{Password: password, Webhook: fmt.Sprintf("http://127.0.0.1:%d/", p)})
	if code := request(t, http.MethodPost, srv.URL()+"/repos/add", password,
		map[string]any{"dids": []string{alice.DID().String(), bob.DID().String()}}, nil); code != http.StatusOK {
		t.Fatalf("/repos/add answered %d", code)
	}
	waitIndexed(t, srv.URL(), password, []*testnet.Account{alice, bob})
	writePosts(t, []*testnet.Account{alice, bob}, 2, "live")
	if _, err := bob.SetHandle("robert.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Deactivate(); err != nil {
		t.Fatal(err)
	}
	waitUntilT(t, "alice deactivated", func() bool {
		var info tapcompat.RepoInfo
		request(t, http.MethodGet, srv.URL()+"/info/"+alice.DID().String(), password, nil, &info)
		return info.State == "deactivated"
	})
	waitIndexed(t, srv.URL(), password, []*testnet.Account{bob})
	// The handle is checked off the commit path: its event may come later.
	waitUntilT(t, "bob's new handle", func() bool {
		for _, e := range got.snapshot() {
			if e.Identity != nil && e.Identity.Handle == "robert.test" {
				return true
			}
		}
		return false
	})
	events := waitAll(t, &got, srv.URL(), password)
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("the webhook could not take some posts: %v", errs)
	}
	kinds, seen := map[string]int{}, map[uint64]bool{}
	for _, e := range events {
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		switch {
		case e.Identity != nil && e.Identity.Status == "deactivated":
			kinds["deactivated"]++
		case e.Identity != nil:
			kinds["identity"]++
		case e.Record.Live:
			kinds["live"]++
		default:
			kinds["backfill"]++
		}
	}
	if kinds["backfill"] != 6 || kinds["live"] != 4 || kinds["identity"] == 0 || kinds["deactivated"] != 1 {
		t.Fatalf("webhook took %v; want 6 backfill and 4 live records, a handle change and a deactivation", kinds)
	}
}

// TestTapClient_SeesAFailedResync: a repo whose backfill fails reaches the
// @atproto/tap client as an identity event of the repo (which it parses
// and acks), and its getRepoInfo then says "error" and why; once the host
// answers, the records follow.
func TestTapClient_SeesAFailedResync(t *testing.T) {
	node := findNode(t)
	tn := testnet.New(t)
	alice := tn.Account(t, "alice.test", testnet.Records(post, 3))
	tn.Host(0).FailNext("com.atproto.sync.getRepo", 1000, http.StatusBadGateway)
	srv := startChild(t, tn, childOptions{Password: clientPassword})
	c := startClient(t, node, srv.URL(), clientPassword)
	c.do(map[string]any{"cmd": "add", "dids": []string{alice.DID().String()}})
	c.waitEvents("alice's failed sync", func(ls []clientLine) bool {
		return count(ls, func(l clientLine) bool {
			return l.Acked && l.Event.Type == "identity" && l.Event.DID == alice.DID().String() && l.Event.Status == "active"
		}) > 0
	})
	var info tapcompat.RepoInfo
	if err := json.Unmarshal(c.do(map[string]any{"cmd": "info", "did": alice.DID().String()}).Info, &info); err != nil {
		t.Fatal(err)
	}
	if info.Retries == 0 || !strings.Contains(info.Error, "502") {
		t.Fatalf("getRepoInfo = %+v, want the failing repo with its reason", info)
	}
	tn.Host(0).ClearFaults()
	c.waitEvents("alice's records", func(ls []clientLine) bool {
		return count(ls, func(l clientLine) bool { return l.Acked && l.Event.Type == "record" }) == 3
	})
}
