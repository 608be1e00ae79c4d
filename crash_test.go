package cistern_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// TestCrashChild is the child process of TestIndexer_SurvivesSIGKILL: it
// runs an Indexer in full-network mode until it is killed.
func TestCrashChild(t *testing.T) {
	db := os.Getenv("CISTERN_CRASH_DB")
	if db == "" {
		t.Skip("child process of TestIndexer_SurvivesSIGKILL")
	}
	relay := os.Getenv("CISTERN_CRASH_RELAY")
	ix, err := cistern.Open(cistern.Config{
		Path:                   db,
		RelayURL:               relay,
		PLCURL:                 os.Getenv("CISTERN_CRASH_PLC"),
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

// churn writes random creates, updates, deletes and multi-op commits to the
// accounts until stop is closed.
func churn(t *testing.T, accts []*testnet.Account, seed uint64, stop <-chan struct{}) (wait func() int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	commits := 0
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				a := accts[rng.IntN(len(accts))]
				recs := a.Records()
				var ops []testnet.Op
				n := 1
				if rng.IntN(5) == 0 {
					n = 2 + rng.IntN(4)
				}
				used := map[string]bool{}
				for i := 0; i < n; i++ {
					switch k := rng.IntN(10); {
					case k < 5 || len(recs) < 3:
						ops = append(ops, testnet.Create(post, "", testnet.Post(post, "churn")))
					default:
						r := recs[rng.IntN(len(recs))]
						if used[r.Path()] {
							continue
						}
						used[r.Path()] = true
						if k < 8 {
							// A unique text: an update to the value a record
							// has is not a valid op.
							ops = append(ops, testnet.Update(r.Collection, r.RKey, testnet.Post(r.Collection, fmt.Sprintf("edit %d.%d", w, rng.Uint64()))))
						} else {
							ops = append(ops, testnet.Delete(r.Collection, r.RKey))
						}
					}
				}
				if _, err := a.Apply(ops...); err != nil {
					t.Errorf("churn: %v", err)
					return
				}
				mu.Lock()
				commits++
				mu.Unlock()
				time.Sleep(time.Duration(1+rng.IntN(3)) * time.Millisecond)
			}
		}(w)
	}
	return func() int { wg.Wait(); return commits }
}

func TestIndexer_SurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills child processes")
	}
	net := testnet.New(t)
	accts, err := net.Generate(context.Background(), testnet.GenerateOptions{Accounts: 200, Records: 20, Collections: []string{post}})
	if err != nil {
		t.Fatal(err)
	}
	db := t.TempDir() + "/cistern.db"
	stop := make(chan struct{})
	wait := churn(t, accts, 1, stop)
	rng := rand.New(rand.NewPCG(7, 7))
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CISTERN_CRASH_DB="+db, "CISTERN_CRASH_RELAY="+net.RelayURL(), "CISTERN_CRASH_PLC="+net.PLCURL())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(400+rng.IntN(1200)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	close(stop)
	commits := wait()
	t.Logf("%d commits written across 4 SIGKILLs", commits)

	// Restart once more, in process, and let it settle.
	cfg := testConfig(t, net, filter.Spec{FullNetwork: true})
	cfg.Path, cfg.NoCrawl = db, false
	ix := runIndexer(t, cfg)
	assertConverged(t, ix, accts...)
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Repos["synced"] != int64(len(accts)) {
		t.Fatalf("repos by state %v, want %d synced", st.Repos, len(accts))
	}
	// Nothing was skipped: had a message been lost, a later commit would
	// not have chained and the repo would have been resynced.
	for reason, n := range st.Rejected {
		if n != 0 {
			t.Errorf("%d commits rejected as %s", n, reason)
		}
	}
}
