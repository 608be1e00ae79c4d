package tapcompat_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"syscall"
	"testing"

	"github.com/cistern-dev/cistern/tapcompat"
	"github.com/cistern-dev/cistern/testnet"
)

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
	srv := startChild(t, tn, childOptions{})
	c := startClient(t, node, srv.URL(), "")

	c.do(map[string]any{"cmd": "hold", "n": 3})
	c.do(map[string]any{"cmd": "add", "dids": []string{alice.DID().String()}})
	ls := c.waitEvents("6 events", func(ls []clientLine) bool { return len(ls) == 6 })
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
	ls = c.waitEvents("the held events again", func(ls []clientLine) bool { return len(ls) >= 9 })
	var again []uint64
	for _, l := range ls[6:] {
		if !l.Acked {
			t.Fatalf("event %d not acked after the reconnect", l.Event.ID)
		}
		again = append(again, l.Event.ID)
	}
	slices.Sort(again)
	if !slices.Equal(again, held) {
		t.Fatalf("redelivered %v, want exactly the unacked %v", again, held)
	}
	waitAll(t, &c.acked, srv.URL(), "")
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
	srv := startChild(t, tn, childOptions{})
	c := startClient(t, node, srv.URL(), "")
	c.do(map[string]any{"cmd": "hold", "n": 4})
	c.do(map[string]any{"cmd": "add", "dids": dids})
	c.waitEvents("the first events", func(ls []clientLine) bool { return len(ls) >= 10 })
	writePosts(t, accts, 2, "before the kill")

	srv.restart(syscall.SIGKILL)
	writePosts(t, accts, 2, "while down and after")
	waitIndexed(t, srv.URL(), "", accts)
	events := waitAll(t, &c.acked, srv.URL(), "")

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
	waitIndexed(t, srv.URL(), "", accts)
	events = waitAll(t, &c.acked, srv.URL(), "")
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
