package boltstore_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

// crashChildEnv, when set to a file path, turns TestCrashConsistency into
// the child process that writes to that file until it is killed.
const crashChildEnv = "BOLTSTORE_CRASH_CHILD"

// The crash workload: transaction p (0-based) writes exactly crashK events
// and sets meta "progress" to p+1; every 7th transaction also prunes.
const (
	crashK    = 20
	crashKeys = 97 // distinct rkeys, so records are replaced and deleted
	crashKeep = 150
)

var crashDIDs = []string{"did:plc:crasha", "did:plc:crashb", "did:plc:crashc"}

const crashColl = "app.bsky.feed.post"

func crashValue(n uint64) ([]byte, []byte) {
	v := []byte(fmt.Sprintf("value %d %s", n%13, strings.Repeat("x", int(n%13)*40)))
	sum := sha256.Sum256(v)
	return append([]byte{1, 0x71, 0x12, 0x20}, sum[:]...), v
}

func metaUint(tx store.ReadTx, key string) (uint64, error) {
	v, err := tx.Meta(key)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return strconv.ParseUint(string(v), 10, 64)
}

// crashTx writes transaction p of the workload. It is deterministic, so the
// state after p transactions can be rebuilt elsewhere.
func crashTx(tx store.Tx, p uint64) error {
	rev := strconv.FormatUint(p+1, 10)
	for i := range uint64(crashK) {
		n := p*crashK + i
		did, rkey := crashDIDs[n%3], fmt.Sprintf("r%03d", n%crashKeys)
		if i == 0 && p%5 == 0 {
			if err := tx.DeleteRecord(did, crashColl, rkey); err != nil {
				return err
			}
			if err := tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: did, Rev: rev, Time: time.Unix(int64(n), 0),
				Collection: crashColl, RKey: rkey, Action: store.ActionDelete}); err != nil {
				return err
			}
			continue
		}
		cid, v := crashValue(n)
		if err := tx.PutRecord(&store.Record{DID: did, Collection: crashColl, RKey: rkey, CID: cid, Rev: rev, Value: v}); err != nil {
			return err
		}
		if err := tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: did, Rev: rev, Time: time.Unix(int64(n), 0),
			Collection: crashColl, RKey: rkey, Action: store.ActionCreate, CID: cid, Record: v}); err != nil {
			return err
		}
	}
	if err := tx.PutRepo(&store.Repo{DID: fmt.Sprintf("did:plc:repo%d", p%10), State: store.RepoStates[p%9], Rev: rev}); err != nil {
		return err
	}
	if p%7 == 6 {
		_, newest, err := tx.EventBounds()
		if err != nil {
			return err
		}
		if newest > crashKeep {
			n, err := tx.PruneEvents(newest-crashKeep, 0)
			if err != nil {
				return err
			}
			pruned, err := metaUint(tx, "pruned")
			if err != nil {
				return err
			}
			if err := tx.PutMeta("pruned", []byte(strconv.FormatUint(pruned+uint64(n), 10))); err != nil {
				return err
			}
		}
	}
	return tx.PutMeta("progress", []byte(strconv.FormatUint(p+1, 10)))
}

// crashChild runs the workload with fsync on, reporting each commit on
// stdout, until it is killed (or 30s pass, should its parent be gone).
func crashChild(path string) {
	db, err := boltstore.Open(path, nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var p uint64
		err := db.Update(context.Background(), func(tx store.Tx) error {
			var err error
			if p, err = metaUint(tx, "progress"); err != nil {
				return err
			}
			return crashTx(tx, p)
		})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("committed", p+1)
	}
	os.Exit(3)
}

func TestCrashConsistency(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("kills child processes; skipped in -short")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "crash.db")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	// ref is rebuilt from the deterministic workload to the progress found
	// after each crash.
	ref, err := boltstore.Open(filepath.Join(dir, "ref.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	var refProgress, lastProgress uint64

	const rounds = 7
	for round := range rounds {
		reported := runAndKill(t, path, 50+rng.IntN(251))

		db, err := boltstore.Open(path, nil)
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		progress := checkCrashInvariants(t, db)
		if progress < reported {
			t.Errorf("round %d: progress %d, but the child saw commit %d return: a committed transaction was lost", round, progress, reported)
		}
		if progress < lastProgress {
			t.Errorf("round %d: progress went back from %d to %d", round, lastProgress, progress)
		}
		lastProgress = progress

		for ; refProgress < progress; refProgress++ {
			if err := ref.Update(t.Context(), func(tx store.Tx) error { return crashTx(tx, refProgress) }); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := crashDump(t, db), crashDump(t, ref); got != want {
			t.Errorf("round %d: state after the crash differs from the workload replayed to progress %d:\n%s",
				round, progress, firstDiff(got, want))
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: progress %d (child reported %d)", round, progress, reported)
		if t.Failed() {
			return
		}
	}
	if lastProgress == 0 {
		t.Fatal("the child never committed a transaction")
	}
}

// runAndKill starts the child on path, kills it with SIGKILL ms
// milliseconds after it is ready, and returns the last commit it reported.
func runAndKill(t *testing.T, path string, ms int) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashConsistency$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	var reported atomic.Uint64
	var childErr atomic.Value
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "ready":
				close(ready)
			case strings.HasPrefix(line, "committed "):
				n, _ := strconv.ParseUint(strings.TrimPrefix(line, "committed "), 10, 64)
				reported.Store(n)
			case strings.HasPrefix(line, "error "):
				childErr.Store(line)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		cmd.Wait()
		t.Fatalf("child exited before it was ready: %v", childErr.Load())
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child not ready after 20s")
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	cmd.Wait()
	if e := childErr.Load(); e != nil {
		t.Fatalf("child failed: %v", e)
	}
	return reported.Load()
}

// checkCrashInvariants checks what must hold after any crash, independent of
// the replay, and returns the progress.
func checkCrashInvariants(t *testing.T, db *boltstore.DB) uint64 {
	t.Helper()
	var progress uint64
	err := db.View(t.Context(), func(tx store.ReadTx) error {
		var err error
		if progress, err = metaUint(tx, "progress"); err != nil {
			return err
		}
		pruned, err := metaUint(tx, "pruned")
		if err != nil {
			return err
		}
		oldest, newest, err := tx.EventBounds()
		if err != nil {
			return err
		}
		if newest != crashK*progress {
			t.Errorf("newest event %d, want %d × progress %d: a partial transaction is visible", newest, crashK, progress)
		}
		wantOldest := pruned + 1
		if newest == pruned {
			wantOldest = 0
		}
		if oldest != wantOldest {
			t.Errorf("oldest event %d, want %d (pruned %d)", oldest, wantOldest, pruned)
		}
		// Events: ids contiguous, grouped by transaction; refs counted.
		refs := map[string]uint64{}
		next := pruned + 1
		if err := tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			if ev.ID != next {
				return false, fmt.Errorf("event id %d, want %d: ids not contiguous", ev.ID, next)
			}
			next++
			if want := strconv.FormatUint((ev.ID-1)/crashK+1, 10); ev.Rev != want {
				return false, fmt.Errorf("event %d has rev %s, want %s", ev.ID, ev.Rev, want)
			}
			if ev.CID != nil {
				refs[ev.DID+" "+string(ev.CID)]++
				if sum := sha256.Sum256(ev.Record); string(ev.CID[4:]) != string(sum[:]) {
					return false, fmt.Errorf("event %d: value does not match its CID", ev.ID)
				}
			}
			return true, nil
		}); err != nil {
			return err
		}
		retained := int64(next - pruned - 1)
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		if c.Events != retained {
			t.Errorf("Counts().Events = %d, scanned %d", c.Events, retained)
		}
		// Records: values match CIDs, no rev beyond progress.
		var records int64
		for _, did := range crashDIDs {
			if err := tx.ScanRecords(store.RecordScan{DID: did, WithValues: true}, func(r *store.Record) (bool, error) {
				records++
				refs[r.DID+" "+string(r.CID)]++
				if sum := sha256.Sum256(r.Value); string(r.CID[4:]) != string(sum[:]) {
					return false, fmt.Errorf("record %s/%s: value does not match its CID", did, r.RKey)
				}
				if rev, _ := strconv.ParseUint(r.Rev, 10, 64); rev > progress || rev == 0 {
					return false, fmt.Errorf("record %s/%s has rev %s beyond progress %d", did, r.RKey, r.Rev, progress)
				}
				return true, nil
			}); err != nil {
				return err
			}
		}
		if c.Records != records {
			t.Errorf("Counts().Records = %d, scanned %d", c.Records, records)
		}
		var blockBytes int64
		for key, want := range refs {
			did, cid, _ := strings.Cut(key, " ")
			n, err := tx.BlockRefs(did, []byte(cid))
			if err != nil {
				return err
			}
			if n != want {
				t.Errorf("refs of %x = %d, want %d (records + retained events)", cid, n, want)
			}
			b, err := tx.Block(did, []byte(cid))
			if err != nil {
				return fmt.Errorf("block %x: %w", cid, err)
			}
			blockBytes += int64(len(b))
		}
		if c.Blocks != int64(len(refs)) || c.BlockBytes != blockBytes {
			t.Errorf("Counts blocks %d bytes %d, want %d %d: unreferenced blocks kept or counters off",
				c.Blocks, c.BlockBytes, len(refs), blockBytes)
		}
		// Repos by state.
		byState := map[store.RepoState]int64{}
		var repos int64
		if err := tx.ScanRepos("", func(r *store.Repo) (bool, error) {
			repos++
			byState[r.State]++
			return true, nil
		}); err != nil {
			return err
		}
		if c.Repos != repos {
			t.Errorf("Counts().Repos = %d, scanned %d", c.Repos, repos)
		}
		for s, n := range byState {
			if c.ReposByState[s] != n {
				t.Errorf("Counts().ReposByState[%v] = %d, scanned %d", s, c.ReposByState[s], n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("invariants: %v", err)
	}
	return progress
}

// crashDump renders the state the workload touches.
func crashDump(t *testing.T, db *boltstore.DB) string {
	t.Helper()
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	err := db.View(t.Context(), func(tx store.ReadTx) error {
		cids := map[string]bool{}
		for _, did := range crashDIDs {
			if err := tx.ScanRecords(store.RecordScan{DID: did, WithValues: true}, func(r *store.Record) (bool, error) {
				add("record %s %s/%s %x %s %x", r.DID, r.Collection, r.RKey, r.CID, r.Rev, r.Value)
				cids[r.DID+" "+string(r.CID)] = true
				return true, nil
			}); err != nil {
				return err
			}
		}
		if err := tx.ScanCollection(crashColl, 0, func(r *store.Record) (bool, error) {
			add("bycoll %s/%s %s", r.DID, r.RKey, r.Rev)
			return true, nil
		}); err != nil {
			return err
		}
		if err := tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			add("event %d %s %s/%s %v %x %s", ev.ID, ev.DID, ev.Collection, ev.RKey, ev.Action, ev.CID, ev.Rev)
			cids[ev.DID+" "+string(ev.CID)] = true
			return true, nil
		}); err != nil {
			return err
		}
		for c := range cids {
			did, cid, _ := strings.Cut(c, " ")
			n, err := tx.BlockRefs(did, []byte(cid))
			if err != nil {
				return err
			}
			add("refs %s %x %d", did, cid, n)
		}
		if err := tx.ScanRepos("", func(r *store.Repo) (bool, error) {
			add("repo %s %v %s", r.DID, r.State, r.Rev)
			return true, nil
		}); err != nil {
			return err
		}
		for _, k := range []string{"progress", "pruned"} {
			v, err := metaUint(tx, k)
			if err != nil {
				return err
			}
			add("meta %s %d", k, v)
		}
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		add("counts %d %d %d %d %d %v", c.Repos, c.Records, c.Events, c.Blocks, c.BlockBytes, c.ReposByState)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i, gl, wl)
		}
	}
	return "(equal)"
}
