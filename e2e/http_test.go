package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
)

// server is the replica of a running examples/cistern binary, read over
// its HTTP side: XRPC getRecord, listRecords, describeRepo,
// dev.cistern.getRepoInfo, and the /stream WebSocket.
type server struct {
	base string
	x    *xrpc
}

var _ replica = server{}

func newServer(base string) server { return server{base: base, x: newXRPC(base)} }

func (s server) records(ctx context.Context, did, collection string) ([]xrecord, error) {
	return s.x.listRecords(ctx, did, collection)
}

func (s server) record(ctx context.Context, did, collection, rkey string) (*xrecord, error) {
	r, err := s.x.getRecord(ctx, did, collection, rkey)
	if isXRPCError(err, "RecordNotFound") {
		return nil, nil
	}
	return r, err
}

func (s server) collections(ctx context.Context, did string) ([]string, error) {
	d, err := s.x.describeRepo(ctx, did)
	if isXRPCError(err, "RepoNotFound") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return d.Collections, nil
}

func (s server) repo(ctx context.Context, did string) (*repoView, error) {
	var info struct {
		State, Status, Handle, Rev string
	}
	err := s.x.get(ctx, "dev.cistern.getRepoInfo", map[string][]string{"repo": {did}}, &info)
	if isXRPCError(err, "RepoNotFound") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// The binary resolves handles with DNS and HTTPS, which .test handles
	// do not have: it cannot know them.
	return &repoView{State: info.State, Status: info.Status, Rev: info.Rev, Handle: info.Handle, handleUnknown: true}, nil
}

// events reads GET /stats for the newest event id, then /stream?cursor=0
// up to it.
func (s server) events(ctx context.Context) ([]*event, error) {
	var stats struct {
		NewestEvent uint64 `json:"newestEvent"`
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.x.hc.Do(req)
	if err != nil {
		return nil, err
	}
	err = json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /stats: HTTP %d: %v", resp.StatusCode, err)
	}
	if stats.NewestEvent == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.base, "http")+"/stream?cursor=0", nil)
	if err != nil {
		return nil, fmt.Errorf("dial /stream: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(16 << 20)
	var out []*event
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return nil, fmt.Errorf("/stream after %d events: %w", len(out), err)
		}
		ev, err := parseStreamEvent(data)
		if err != nil {
			return nil, err
		}
		if ev == nil {
			continue // an info frame
		}
		out = append(out, ev)
		if ev.ID >= stats.NewestEvent {
			return out, nil
		}
	}
}

// parseStreamEvent reads one /stream frame (stream.EventJSON); nil for an
// info frame.
func parseStreamEvent(data []byte) (*event, error) {
	var f struct {
		ID     uint64 `json:"id"`
		Type   string `json:"type"`
		Record *struct {
			Live       bool            `json:"live"`
			DID        string          `json:"did"`
			Rev        string          `json:"rev"`
			Collection string          `json:"collection"`
			RKey       string          `json:"rkey"`
			Action     string          `json:"action"`
			CID        string          `json:"cid"`
			Record     json.RawMessage `json:"record"`
		} `json:"record"`
		Identity *struct {
			DID    string `json:"did"`
			Handle string `json:"handle"`
		} `json:"identity"`
		Account *struct {
			DID    string `json:"did"`
			Active bool   `json:"active"`
			Status string `json:"status"`
		} `json:"account"`
		Repo *struct {
			DID   string `json:"did"`
			State string `json:"state"`
		} `json:"repo"`
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("/stream frame %q: %w", data, err)
	}
	switch {
	case f.Type == "record" && f.Record != nil:
		r := f.Record
		return &event{ID: f.ID, Kind: "record", Live: r.Live, DID: r.DID, Rev: r.Rev, Collection: r.Collection,
			RKey: r.RKey, Action: r.Action, CID: r.CID, Value: r.Record}, nil
	case f.Type == "identity" && f.Identity != nil:
		return &event{ID: f.ID, Kind: "identity", DID: f.Identity.DID, Handle: f.Identity.Handle}, nil
	case f.Type == "account" && f.Account != nil:
		a := f.Account
		return &event{ID: f.ID, Kind: "account", DID: a.DID, Active: a.Active, Status: a.Status}, nil
	case f.Type == "repo" && f.Repo != nil:
		return &event{ID: f.ID, Kind: "repo", DID: f.Repo.DID, Status: f.Repo.State}, nil
	case f.Type == "info":
		return nil, nil
	}
	return nil, fmt.Errorf("/stream frame %s", data)
}

// buildServer builds examples/cistern (with -race when the tests run with
// it) into a temporary folder.
func buildServer(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cistern")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../examples/cistern")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build examples/cistern: %v\n%s", err, out)
	}
	return bin
}

// startServer runs the binary on path, tracking dids, listening on a free
// port, and waits until it answers /health.
func startServer(t testing.TB, bin string, n *network, path string, dids []string) (*proc, server) {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	p := startProc(t, bin, "-db", path, "-listen", strings.TrimPrefix(base, "http://"), "-relay", n.PDS, "-plc", n.PLC,
		"-track", strings.Join(dids, ","), "-log-level", "debug")
	eventually(t, 30*time.Second, "examples/cistern answers /health", func() error {
		select {
		case <-p.done:
			t.Fatalf("examples/cistern exited (%v):\n%s", p.cmd.ProcessState, p.logs.tail(3000))
		default:
		}
		resp, err := http.Get(base + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return p, newServer(base)
}

// serveAPI serves httpapi over ix on a loopback port until the test ends.
func serveAPI(t testing.TB, ix *cistern.Indexer) server {
	t.Helper()
	srv := httptest.NewServer(httpapi.New(ix, httpapi.Options{Logger: testLogger(t)}))
	t.Cleanup(srv.Close)
	return newServer(srv.URL)
}

// stopGracefully sends SIGTERM and waits.
func (p *proc) stopGracefully(t testing.TB) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("process did not stop 30 s after SIGTERM:\n%s", p.logs.tail(3000))
		p.kill(t)
	}
}

// The HTTP side: the examples/cistern binary follows the PDS, is killed
// with SIGKILL in the middle of writes and started again, and its XRPC
// answers and /stream must then agree with the PDS.
func TestServer_HTTPAnswersMatchThePDSAcrossSIGKILL(t *testing.T) {
	n := refnet(t)
	colls := []string{"dev.cistern.ehttp.a", "dev.cistern.ehttp.b"}
	alice := n.createAccount(t, "alice")
	bob := n.createAccount(t, "bob")
	for _, a := range []account{alice, bob} {
		for _, c := range colls {
			n.create(t, a.DID, c, "seed")
		}
	}
	dids := []string{alice.DID, bob.DID}
	filt := mustFilter(t, filter.Spec{DIDs: dids})
	bin := buildServer(t)
	path := dbPath(t)

	p, s := startServer(t, bin, n, path, dids)
	assertConverged(t, n, s, filt, dids...)
	// A live commit each, and time to save the firehose cursor (every
	// second by default): from now on a restart resumes from a cursor.
	for _, did := range dids {
		n.create(t, did, colls[0], "pin the cursor")
	}
	assertConverged(t, n, s, filt, dids...)
	time.Sleep(1500 * time.Millisecond)

	stop := churn(n, dids, colls)
	for range 2 {
		time.Sleep(time.Duration(500+rand.IntN(800)) * time.Millisecond)
		p.kill(t)
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		p, s = startServer(t, bin, n, path, dids)
	}
	time.Sleep(time.Second)
	commits, err := stop()
	if err != nil {
		t.Fatalf("writes: %v", err)
	}
	t.Logf("%d commits written across 2 kills", commits)
	n.applyWrites(t, alice.DID, opCreate(colls[0], "last", "x"), opCreate(colls[1], "", "y"))
	assertConverged(t, n, s, filt, dids...)
	assertSameRecordBytes(t, n, s, dids, colls)
	p.stopGracefully(t)
}

// assertSameRecordBytes checks that the server writes every record value
// byte for byte as the PDS does (keys in DAG-CBOR order, no HTML escaping),
// not only as equal JSON.
func assertSameRecordBytes(t *testing.T, n *network, s server, dids, colls []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pds := newXRPC(n.PDS)
	checked := 0
	for _, did := range dids {
		for _, c := range colls {
			want, err := pds.listRecords(ctx, did, c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.x.listRecords(ctx, did, c)
			if err != nil {
				t.Fatal(err)
			}
			byURI := map[string]xrecord{}
			for _, r := range got {
				byURI[r.URI] = r
			}
			for _, w := range want {
				g, ok := byURI[w.URI]
				if !ok {
					t.Fatalf("%s missing from the server", w.URI)
				}
				if string(g.Value) != string(w.Value) {
					t.Fatalf("%s value differs in bytes:\n server %s\n    pds %s", w.URI, g.Value, w.Value)
				}
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("no record compared")
	}
}
