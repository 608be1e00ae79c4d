package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/stream"
)

// childArgs are the flags the parent passes to a child process.
type childArgs struct {
	DB, PLC, Relay, DIDFile string
	Cursor, Until           int64
	Lag                     bool
	Verify                  string
	Subscribers             int
	StreamEvents            int
	FirehoseWorkers         int
	ProfileTag              string // added to the profile's name
	// Records is the scale mode's records per repo.
	Records int
}

// The child's answer is one line on stdout: "RESULT " and a JSON object.
const resultPrefix = "RESULT "

func runChild(role string, a childArgs) error {
	if dir := os.Getenv("BENCH_PROFILE"); dir != "" {
		f, err := os.Create(filepath.Join(dir, role+"-"+a.Verify+a.ProfileTag+".cpu.pprof"))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	var res any
	var err error
	switch role {
	case "backfill":
		res, err = childBackfill(a)
	case "live":
		res, err = childLive(a)
	case "stream":
		res, err = childStream(a)
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		return err
	}
	return printResult(res)
}

// printResult prints a child's result on stdout, where the parent reads it.
func printResult(res any) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Printf("%s%s\n", resultPrefix, b)
	return nil
}

// BENCH_PROFILE=dir makes each child write a CPU profile there, named after
// its role and verification mode.

// childLogger logs errors to stderr; BENCH_LOG=warn (or debug, info) logs more.
func childLogger() *slog.Logger {
	lvl := slog.LevelError
	if v := os.Getenv("BENCH_LOG"); v != "" {
		_ = lvl.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// BackfillResult is what the backfill child measures.
type BackfillResult struct {
	Repos         int     `json:"repos"`
	Records       int64   `json:"records"`
	Events        uint64  `json:"events"`
	Seconds       float64 `json:"seconds"`
	ReposPerSec   float64 `json:"reposPerSec"`
	RecordsPerSec float64 `json:"recordsPerSec"`
	PeakRSS       int64   `json:"peakRSSBytes"`
	// PeakHeap is the largest Go heap (live and unswept objects) sampled
	// every 20 ms: RSS also counts the pages of the mapped store file.
	PeakHeap   int64 `json:"peakHeapBytes"`
	DiskBytes  int64 `json:"diskBytes"`
	BlockBytes int64 `json:"blockBytes"`
	Errors     int64 `json:"errors"`
	// CPUSeconds is the indexer process's user+system CPU time: on a
	// machine shared with other work, records per CPU-second is the number
	// that does not depend on the load.
	CPUSeconds float64 `json:"cpuSeconds"`
}

func childBackfill(a childArgs) (*BackfillResult, error) {
	raw, err := os.ReadFile(a.DIDFile)
	if err != nil {
		return nil, err
	}
	dids := strings.Fields(string(raw))
	mode, err := cistern.ParseVerifyMode(a.Verify)
	if err != nil {
		return nil, err
	}
	st0, err := openStore(a.DB)
	if err != nil {
		return nil, err
	}
	defer st0.Close()
	start := time.Now()
	ix, err := cistern.Open(cistern.Config{
		Store:                  st0,
		Filter:                 filter.Spec{DIDs: dids},
		NoFirehose:             true,
		NoCrawl:                true,
		PLCURL:                 a.PLC,
		SkipHandleVerification: true,
		Verify:                 mode,
		Logger:                 childLogger(),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- ix.Run(ctx) }()
	var st *cistern.Stats
	var peakHeap uint64
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	for {
		metrics.Read(heap)
		peakHeap = max(peakHeap, heap[0].Value.Uint64())
		st, err = ix.Stats(ctx)
		if err != nil {
			break
		}
		if st.Repos["error"] > 0 {
			err = fmt.Errorf("%d repos failed to backfill", st.Repos["error"])
			break
		}
		if st.Repos["synced"] >= int64(len(dids)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	<-runDone
	if err != nil {
		ix.Close()
		return nil, err
	}
	res := &BackfillResult{
		Repos: len(dids), Records: st.Records, Events: st.NewestEvent, Seconds: elapsed.Seconds(),
		ReposPerSec:   float64(len(dids)) / elapsed.Seconds(),
		RecordsPerSec: float64(st.Records) / elapsed.Seconds(),
		BlockBytes:    st.BlockBytes,
	}
	res.PeakRSS = peakRSS()
	res.PeakHeap = int64(peakHeap)
	res.CPUSeconds = cpuSeconds()
	if err := ix.Close(); err != nil {
		return nil, err
	}
	res.DiskBytes = st0.Size()
	return res, nil
}

// LiveResult is what the live child measures.
type LiveResult struct {
	Verify        string  `json:"verify"`
	Commits       int64   `json:"commits"`
	Events        uint64  `json:"events"`
	Seconds       float64 `json:"seconds"`
	CommitsPerSec float64 `json:"commitsPerSec"`
	Rejected      int64   `json:"rejected"`
	PeakRSS       int64   `json:"peakRSSBytes"`
	CPUSeconds    float64 `json:"cpuSeconds"`
	// Repos is the number of repos the backlog was spread over, set for
	// the spread backlog only (see runSpread).
	Repos int `json:"repos,omitempty"`

	LagCommits int64   `json:"lagCommits,omitempty"`
	LagRate    float64 `json:"lagCommitsPerSec,omitempty"`
	LagP50ms   float64 `json:"lagP50ms,omitempty"`
	LagP99ms   float64 `json:"lagP99ms,omitempty"`
	LagMaxms   float64 `json:"lagMaxms,omitempty"`
}

func childLive(a childArgs) (*LiveResult, error) {
	mode, err := cistern.ParseVerifyMode(a.Verify)
	if err != nil {
		return nil, err
	}
	db, err := openStore(a.DB)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ix, err := cistern.Open(cistern.Config{
		Store:                  db,
		RelayURL:               a.Relay,
		NoCrawl:                true,
		PLCURL:                 a.PLC,
		SkipHandleVerification: true,
		Verify:                 mode,
		CursorInterval:         20 * time.Millisecond,
		FirehoseWorkers:        a.FirehoseWorkers,
		Logger:                 childLogger(),
	})
	if err != nil {
		return nil, err
	}
	defer ix.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Place the firehose cursor just before the backlog.
	if err := ix.SetCursor(ctx, a.Relay, a.Cursor); err != nil {
		return nil, err
	}
	st0, err := ix.Stats(ctx)
	if err != nil {
		return nil, err
	}
	waitCursor := func(until int64) error {
		for {
			c, err := ix.Cursor(ctx, a.Relay)
			if err != nil {
				return err
			}
			if c >= until {
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	start := time.Now()
	runDone := make(chan error, 1)
	go func() { runDone <- ix.Run(ctx) }()
	if err := waitCursor(a.Until); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	st1, err := ix.Stats(ctx)
	if err != nil {
		return nil, err
	}
	res := &LiveResult{Verify: string(mode), Commits: a.Until - a.Cursor, Events: st1.NewestEvent - st0.NewestEvent,
		Seconds: elapsed.Seconds(), CommitsPerSec: float64(a.Until-a.Cursor) / elapsed.Seconds()}
	for _, n := range st1.Rejected {
		res.Rejected += n
	}
	res.PeakRSS = peakRSS()
	res.CPUSeconds = cpuSeconds()

	if a.Lag {
		if err := measureLag(ctx, ix, a, waitCursor, res); err != nil {
			return nil, err
		}
	}
	cancel()
	<-runDone
	return res, nil
}

// measureLag tells the parent the backlog is done, then follows its load:
// each live record event's lag is the time from the record's createdAt to
// its delivery to a live subscriber.
func measureLag(ctx context.Context, ix *cistern.Indexer, a childArgs, waitCursor func(int64) error, res *LiveResult) error {
	sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Live: true})
	if err != nil {
		return err
	}
	defer sub.Close()
	var (
		mu   sync.Mutex
		lags []time.Duration
		last atomic.Uint64
	)
	go func() {
		for ev := range sub.Events() {
			now := time.Now()
			last.Store(ev.ID)
			if ev.Record == nil {
				continue
			}
			v, err := atdata.UnmarshalCBOR(ev.Record)
			if err != nil {
				continue
			}
			s, _ := v["createdAt"].(string)
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				continue
			}
			mu.Lock()
			lags = append(lags, now.Sub(t))
			mu.Unlock()
		}
	}()
	from, err := ix.Cursor(ctx, a.Relay)
	if err != nil {
		return err
	}
	fmt.Println("CAUGHTUP")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read the parent's UNTIL line: %w", err)
	}
	var until int64
	var rate float64
	if _, err := fmt.Sscanf(line, "UNTIL %d %g", &until, &rate); err != nil {
		return fmt.Errorf("parse %q: %w", line, err)
	}
	if err := waitCursor(until); err != nil {
		return err
	}
	st, err := ix.Stats(ctx)
	if err != nil {
		return err
	}
	for last.Load() < st.NewestEvent {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lags)
	res.LagCommits, res.LagRate = until-from, rate
	if n := len(lags); n > 0 {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		res.LagP50ms, res.LagP99ms, res.LagMaxms = ms(lags[n/2]), ms(lags[n*99/100]), ms(lags[n-1])
	}
	return nil
}

// StreamResult is what the stream child measures.
type StreamResult struct {
	Events      uint64  `json:"events"`
	OneSeconds  float64 `json:"oneSubscriberSeconds"`
	OnePerSec   float64 `json:"oneSubscriberEventsPerSec"`
	OnePeakRSS  int64   `json:"oneSubscriberPeakRSSBytes"`
	Subscribers int     `json:"subscribers"`
	ManyEach    uint64  `json:"eventsPerSubscriber"`
	ManySeconds float64 `json:"manySeconds"`
	ManyPerSec  float64 `json:"manyEventsPerSec"`
	ManyPeakRSS int64   `json:"manyPeakRSSBytes"`
}

func childStream(a childArgs) (*StreamResult, error) {
	db, err := openStore(a.DB)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ix, err := cistern.Open(cistern.Config{Store: db, NoFirehose: true, NoCrawl: true, PLCURL: a.PLC, Logger: childLogger()})
	if err != nil {
		return nil, err
	}
	defer ix.Close()
	ctx := context.Background()
	st, err := ix.Stats(ctx)
	if err != nil {
		return nil, err
	}
	newest := st.NewestEvent
	res := &StreamResult{Events: newest, Subscribers: a.Subscribers}
	read := func(n uint64) (uint64, error) {
		sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Cursor: 0})
		if err != nil {
			return 0, err
		}
		defer sub.Close()
		var got uint64
		for ev := range sub.Events() {
			got++
			if got >= n || ev.ID >= newest {
				return got, nil
			}
		}
		return got, sub.Err()
	}
	runtime.GC()
	resetPeakRSS()
	t := time.Now()
	got, err := read(newest)
	if err != nil {
		return nil, err
	}
	d := time.Since(t)
	res.OneSeconds, res.OnePerSec, res.OnePeakRSS = d.Seconds(), float64(got)/d.Seconds(), peakRSS()

	if a.Subscribers > 0 {
		each := min(uint64(a.StreamEvents), newest)
		res.ManyEach = each
		runtime.GC()
		resetPeakRSS()
		var total atomic.Uint64
		var wg sync.WaitGroup
		errs := make(chan error, a.Subscribers)
		t = time.Now()
		for range a.Subscribers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := read(each)
				total.Add(n)
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		d = time.Since(t)
		close(errs)
		if err := <-errs; err != nil {
			return nil, err
		}
		res.ManySeconds, res.ManyPerSec, res.ManyPeakRSS = d.Seconds(), float64(total.Load())/d.Seconds(), peakRSS()
	}
	return res, nil
}

// peakRSS returns the process's peak resident set size (VmHWM), or -1.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return -1
}

// cpuSeconds returns the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// resetPeakRSS resets VmHWM to the current RSS (Linux: clear_refs 5).
func resetPeakRSS() {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}
