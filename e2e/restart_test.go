package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
)

// churn writes to the accounts until stopped: creates, putRecord updates,
// deletes and multi-op applyWrites, across two collections. stop returns
// the first write error and how many commits were made.
func churn(n *network, dids []string, colls []string) (stop func() (int, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		firstEr error
		commits int
	)
	for i, did := range dids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			var live []string // "collection/rkey" of records written here
			for step := 0; ctx.Err() == nil; step++ {
				coll := colls[rng.IntN(len(colls))]
				var err error
				switch k := rng.IntN(10); {
				case k < 4 || len(live) < 3:
					var out writeResult
					err = n.control(ctx, "/records", map[string]any{"did": did, "collection": coll, "record": record(coll, fmt.Sprint("churn ", step))}, &out)
					if err == nil {
						live = append(live, coll+"/"+rkeyOf(out.URI))
					}
				case k < 6:
					c, rk, _ := strings.Cut(live[rng.IntN(len(live))], "/")
					err = n.control(ctx, "/records/put", map[string]any{"did": did, "collection": c, "rkey": rk, "record": record(c, fmt.Sprint("update ", step))}, nil)
				case k < 8:
					j := rng.IntN(len(live))
					c, rk, _ := strings.Cut(live[j], "/")
					err = n.control(ctx, "/records/delete", map[string]any{"did": did, "collection": c, "rkey": rk}, nil)
					if err == nil {
						live = append(live[:j], live[j+1:]...)
					}
				default:
					j := rng.IntN(len(live))
					c, rk, _ := strings.Cut(live[j], "/")
					rk2 := fmt.Sprintf("m%d", step)
					err = n.control(ctx, "/writes", map[string]any{"did": did, "writes": []map[string]any{
						opDelete(c, rk), opCreate(coll, rk2, "multi"), opCreate(coll, "", "multi generated"),
					}}, nil)
					if err == nil {
						live = append(live[:j], live[j+1:]...)
						live = append(live, coll+"/"+rk2)
					}
				}
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				if err != nil && firstEr == nil {
					firstEr = err
				}
				if err == nil {
					commits++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	return func() (int, error) {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return commits, firstEr
	}
}

// Scenario 4a: cistern closed and reopened (gracefully) in the middle of
// writes, several times.
func TestRestart_CloseAndReopenDuringWrites(t *testing.T) {
	n := refnet(t)
	colls := []string{"dev.cistern.erestart.a", "dev.cistern.erestart.b"}
	alice := n.createAccount(t, "alice")
	bob := n.createAccount(t, "bob")
	for _, a := range []account{alice, bob} {
		for range 5 {
			n.create(t, a.DID, colls[0], "seed")
		}
	}
	spec := filter.Spec{DIDs: []string{alice.DID, bob.DID}}
	cfg := indexerConfig(t, n, dbPath(t), spec)
	ix := startIndexer(t, cfg)
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)

	stop := churn(n, []string{alice.DID, bob.DID}, colls)
	for range 3 {
		time.Sleep(time.Duration(500+rand.IntN(700)) * time.Millisecond)
		ix.stop()
		time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond) // written while down
		ix = startIndexer(t, cfg)
	}
	time.Sleep(time.Second)
	commits, err := stop()
	if err != nil {
		t.Fatalf("writes: %v", err)
	}
	t.Logf("%d commits written across 3 restarts", commits)
	assertConverged(t, n, lib{ix.Indexer}, mustFilter(t, spec), alice.DID, bob.DID)
}

// Scenario 4b: a cistern process killed with SIGKILL in the middle of a
// backfill and in the middle of live writes, then restarted on the same
// file; after the last kill an Indexer opened on that file catches up and
// must agree with the PDS, and its log must be a clean history.
func TestRestart_SIGKILLDuringBackfillAndWrites(t *testing.T) {
	n := refnet(t)
	colls := []string{"dev.cistern.ekill.a", "dev.cistern.ekill.b"}
	// A larger repo, so that the first kill lands in its backfill.
	var seeded struct {
		Accounts []account `json:"accounts"`
	}
	n.must(t, "/seed", map[string]any{"accounts": 1, "records": 600, "collection": colls[1], "prefix": "big"}, &seeded)
	big := seeded.Accounts[0]
	alice := n.createAccount(t, "alice")
	for range 5 {
		n.create(t, alice.DID, colls[0], "seed")
	}
	dids := []string{big.DID, alice.DID}
	spec := filter.Spec{DIDs: dids}
	bin := buildCisternd(t)
	path := dbPath(t)

	// Killed while backfilling (or just after): no SYNCED wait.
	p := startCisternd(t, bin, n, path, dids)
	time.Sleep(400 * time.Millisecond)
	p.kill(t)

	// Restarted; synced; then killed repeatedly while writes go on.
	p = startCisternd(t, bin, n, path, dids)
	p.waitSynced(t, dids...)
	// A live commit each, and time to save the firehose cursor (every
	// 200 ms): from now on a restart resumes from a cursor. (Without one,
	// cistern would reconnect live and skip what it missed: see
	// TestDowntime_NoCursorYet.)
	for _, did := range dids {
		n.create(t, did, colls[0], "pin the cursor")
	}
	time.Sleep(time.Second)
	stop := churn(n, dids, colls)
	for range 3 {
		time.Sleep(time.Duration(400+rand.IntN(900)) * time.Millisecond)
		p.kill(t)
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		p = startCisternd(t, bin, n, path, dids)
	}
	time.Sleep(time.Second)
	p.kill(t)
	commits, err := stop()
	if err != nil {
		t.Fatalf("writes: %v", err)
	}
	t.Logf("%d commits written across 4 kills", commits)

	// What the killed processes left behind, caught up in process.
	ix := startIndexer(t, indexerConfig(t, n, path, spec))
	assertConverged(t, n, lib{ix.Indexer}, mustFilter(t, spec), dids...)
}

// buildCisternd builds e2e/internal/cisternd (with -race when the tests
// run with it) into a temporary folder.
func buildCisternd(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cisternd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./internal/cisternd")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cisternd: %v\n%s", err, out)
	}
	return bin
}

// proc is a running cisternd.
type proc struct {
	cmd    *exec.Cmd
	logs   *lockedBuffer
	synced chan string
	done   chan struct{}
}

func startCisternd(t testing.TB, bin string, n *network, path string, dids []string) *proc {
	t.Helper()
	return startProc(t, bin, "-db", path, "-relay", n.PDS, "-plc", n.PLC,
		"-dids", strings.Join(dids, ","), "-wait", strings.Join(dids, ","))
}

// startProc runs a cistern process; its stdout lines "SYNCED <did>" are
// reported on synced.
func startProc(t testing.TB, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: logs, synced: make(chan string, 64), done: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if did, ok := strings.CutPrefix(sc.Text(), "SYNCED "); ok {
				select {
				case p.synced <- did:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.kill(t)
		}
		if t.Failed() {
			t.Logf("%s pid %d output (tail):\n%s", filepath.Base(bin), cmd.Process.Pid, logs.tail(3000))
		}
	})
	return p
}

func (p *proc) waitSynced(t testing.TB, dids ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, d := range dids {
		want[d] = true
	}
	timeout := time.After(convergeTimeout)
	for len(want) > 0 {
		select {
		case d := <-p.synced:
			delete(want, d)
		case <-p.done:
			t.Fatalf("cisternd exited (%v) before synced:\n%s", p.cmd.ProcessState, p.logs.tail(3000))
		case <-timeout:
			t.Fatalf("cisternd: %v not synced after %s:\n%s", want, convergeTimeout, p.logs.tail(3000))
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		t.Errorf("process had exited by itself (%v):\n%s", p.cmd.ProcessState, p.logs.tail(3000))
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && err != os.ErrProcessDone {
		t.Fatal(err)
	}
	<-p.done
}
