package cistern_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/internal/logcheck"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/pgstore"
	"github.com/cistern-dev/cistern/store/pgstore/pgtest"
	"github.com/cistern-dev/cistern/testnet"
)

// TestPGCrashChild is the indexing child process of
// TestIndexer_PostgresSIGKILLAndReplica: full-network mode on pgstore,
// until it is killed.
func TestPGCrashChild(t *testing.T) {
	u := os.Getenv("CISTERN_PGCRASH_URL")
	if u == "" {
		t.Skip("child process of TestIndexer_PostgresSIGKILLAndReplica")
	}
	st, err := pgstore.Open(context.Background(), u, nil)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := cistern.Open(cistern.Config{
		Store:                  st,
		RelayURL:               os.Getenv("CISTERN_PGCRASH_RELAY"),
		PLCURL:                 os.Getenv("CISTERN_PGCRASH_PLC"),
		SkipHandleVerification: true,
		Filter:                 filter.Spec{FullNetwork: true},
		CursorInterval:         10 * time.Millisecond,
		Backfill:               cistern.BackfillConfig{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Logger:                 testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ix.Run(context.Background()) // until SIGKILL
}

// TestPGReplicaChild is the read-only child process of
// TestIndexer_PostgresSIGKILLAndReplica: it serves the database over HTTP
// and prints its address, until it is killed.
func TestPGReplicaChild(t *testing.T) {
	u := os.Getenv("CISTERN_PGREPLICA_URL")
	if u == "" {
		t.Skip("child process of TestIndexer_PostgresSIGKILLAndReplica")
	}
	st, err := pgstore.Open(context.Background(), u, &pgstore.Options{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	ix, err := cistern.Open(cistern.Config{Store: st, ReadOnly: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, httpapi.New(ix, httpapi.Options{Logger: testLogger()}))
	fmt.Printf("REPLICA http://%s\n", ln.Addr())
	ix.Run(context.Background()) // until killed
}

// TestIndexer_PostgresSIGKILLAndReplica: an indexer on PostgreSQL follows a
// network with live writes and is SIGKILLed mid-backfill several times;
// restarted, it converges; a second, read-only process serving the same
// database then answers listRecords and getRecord as the PDS does, and its
// /stream, replayed from the start and followed through more live writes,
// folds to the PDS's records with no event id doubled or skipped.
func TestIndexer_PostgresSIGKILLAndReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills child processes")
	}
	dbURL := pgtest.Schema(t)
	net := testnet.New(t)
	accts, err := net.Generate(context.Background(), testnet.GenerateOptions{Accounts: 60, Records: 30, Collections: []string{post}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := pgstore.Open(context.Background(), dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after the Indexer (cleanups run in reverse)
	events := func() uint64 {
		var n uint64
		st.View(context.Background(), func(tx store.ReadTx) (err error) {
			_, n, err = tx.EventBounds()
			return err
		})
		return n
	}
	stop := make(chan struct{})
	wait := churn(t, accts, 3, stop)
	rng := rand.New(rand.NewPCG(11, 11))
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPGCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CISTERN_PGCRASH_URL="+dbURL, "CISTERN_PGCRASH_RELAY="+net.RelayURL(), "CISTERN_PGCRASH_PLC="+net.PLCURL())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Killed once it has written, at a random point of its backfill
		// (a loaded machine takes seconds to start a child).
		before := events()
		eventually(t, 2*time.Minute, func() string {
			if events() <= before {
				return fmt.Sprintf("child %d wrote no event", round)
			}
			return ""
		})
		time.Sleep(time.Duration(100+rng.IntN(600)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	close(stop)
	t.Logf("%d commits written across 3 SIGKILLs", wait())

	if st, _ := indexed(st); st.Synced == len(accts) {
		t.Logf("the last child finished the backfill before it was killed")
	}
	// Restart in process and let it converge.
	cfg := testConfig(t, net, filter.Spec{FullNetwork: true})
	cfg.Store, cfg.NoCrawl = st, false
	ix := runIndexer(t, cfg)
	eventually(t, 3*time.Minute, func() string { // a loaded CI machine backfills slowly
		st, err := ix.Stats(context.Background())
		if err != nil {
			return err.Error()
		}
		if st.Repos["synced"] != int64(len(accts)) {
			return fmt.Sprintf("repos by state %v", st.Repos)
		}
		return ""
	})
	assertConverged(t, ix, accts...)

	// The replica, in a process of its own.
	replica := exec.Command(os.Args[0], "-test.run=^TestPGReplicaChild$", "-test.count=1")
	replica.Env = append(os.Environ(), "CISTERN_PGREPLICA_URL="+dbURL)
	out, err := replica.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Process.Kill(); replica.Wait() })
	base := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "REPLICA "); ok {
			base = a
			break
		}
	}
	if base == "" {
		t.Fatalf("the replica did not start")
	}
	go func() {
		for sc.Scan() {
		}
	}()

	// Follow the replica's stream from the start while more live writes
	// happen.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(base, "http", "ws", 1)+"/stream?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 22)
	stop = make(chan struct{})
	wait = churn(t, accts, 4, stop)
	time.Sleep(time.Second)
	close(stop)
	t.Logf("%d commits written with the replica following", wait())
	assertConverged(t, ix, accts...)
	ist, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The replica's stream, folded, equals the PDS.
	fold := map[string]map[string]string{}
	var last uint64
	for last < ist.NewestEvent {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("replica stream after event %d of %d: %v", last, ist.NewestEvent, err)
		}
		var ev struct {
			ID     uint64 `json:"id"`
			Type   string `json:"type"`
			Record *struct {
				DID, Collection, RKey, Action, CID string
			} `json:"record"`
		}
		if err := json.Unmarshal(msg, &ev); err != nil {
			t.Fatalf("stream message %.200q: %v", msg, err)
		}
		if ev.ID != last+1 {
			t.Fatalf("replica stream: event %d after %d (doubled or skipped)", ev.ID, last)
		}
		last = ev.ID
		if ev.Type != "record" || ev.Record == nil {
			continue
		}
		r := ev.Record
		m := fold[r.DID]
		if m == nil {
			m = map[string]string{}
			fold[r.DID] = m
		}
		path := r.Collection + "/" + r.RKey
		switch r.Action {
		case "create", "update":
			m[path] = r.CID
		case "delete":
			delete(m, path)
		}
	}
	f := ix.Filter()
	for _, a := range accts {
		w := logcheck.Want(a, f.Stores)
		if d := diffMaps(fold[a.DID().String()], w); d != "" {
			t.Fatalf("replica stream folded for %s: %s", a.Handle(), d)
		}
		// listRecords, paged, and getRecord, from the replica.
		got := map[string]string{}
		cursor := ""
		for {
			var page struct {
				Cursor  string
				Records []struct{ URI, CID string }
			}
			getJSON(t, base+"/xrpc/com.atproto.repo.listRecords?limit=7&collection="+post+"&repo="+a.DID().String()+"&cursor="+url.QueryEscape(cursor), &page)
			for _, r := range page.Records {
				got[post+"/"+r.URI[strings.LastIndex(r.URI, "/")+1:]] = r.CID
			}
			if page.Cursor == "" || len(page.Records) == 0 {
				break
			}
			cursor = page.Cursor
		}
		if d := diffMaps(got, w); d != "" {
			t.Fatalf("replica listRecords of %s: %s", a.Handle(), d)
		}
		for path, c := range w {
			_, rkey, _ := strings.Cut(path, "/")
			var rec struct{ CID string }
			getJSON(t, base+"/xrpc/com.atproto.repo.getRecord?collection="+post+"&repo="+a.DID().String()+"&rkey="+rkey, &rec)
			if rec.CID != c {
				t.Fatalf("replica getRecord %s %s: cid %q, want %q", a.Handle(), path, rec.CID, c)
			}
			break // one per account
		}
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// indexed counts the synced repos in st.
func indexed(st store.Store) (struct{ Synced int }, error) {
	var out struct{ Synced int }
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		c, err := tx.Counts()
		out.Synced = int(c.ReposByState[store.StateSynced])
		return err
	})
	return out, err
}
