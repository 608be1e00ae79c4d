package main

// The scale mode (-scale 1M,10M,50M): one store grown to each size in turn
// by backfilling repos that a bench-local source builds on demand, with
// ingest throughput, disk, RSS and query latency under a live load measured
// at each size. See docs/performance.md ("Cost as the store grows").

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/testnet"
)

// scaleOptions are the flags of the scale mode.
type scaleOptions struct {
	// Sizes is the -scale list ("1M,10M,50M"); empty means the mode is off.
	Sizes string
	// Window is how long queries run at each size, in seconds.
	Window float64
	// QueryRate is getRecord calls per second, and separately listRecords
	// calls per second, during a window.
	QueryRate float64
	// LiveRate is the live load in commits/s, for the whole run.
	LiveRate float64
	// LiveRepos and LiveRecords size the live repos (in the in-process
	// testnet, tracked beside the bulk repos).
	LiveRepos, LiveRecords int
	// Templates is how many distinct record sets the bulk repos cycle
	// through.
	Templates int
	// Profile is a directory for a CPU profile of the indexer per size
	// (from 90% of the size to the end of its query window).
	Profile string
	// Batch is how many bulk repos are added to the filter at a time.
	Batch int
	// Deadline, if positive, ends the growth: when it passes before the
	// largest size is reached, the store's size then is measured as the
	// last point (its rate over the stretch from 90% of it) and the run
	// ends.
	Deadline time.Duration

	// Child-only: the source's host URLs and the file of sampled keys.
	hosts, keys string
}

func (s *scaleOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&s.Sizes, "scale", "", "scale mode: grow one store to each of these record counts (e.g. 1M,10M,50M) and measure at each")
	fs.Float64Var(&s.Window, "scale-window", 60, "scale mode: seconds of queries at each size")
	fs.Float64Var(&s.QueryRate, "scale-query-rate", 50, "scale mode: getRecord calls/s, and listRecords calls/s, during a window")
	fs.Float64Var(&s.LiveRate, "scale-live-rate", 100, "scale mode: live commits/s for the whole run")
	fs.IntVar(&s.LiveRepos, "scale-live-repos", 200, "scale mode: repos of the live load")
	fs.IntVar(&s.LiveRecords, "scale-live-records", 100, "scale mode: initial records of each live repo")
	fs.IntVar(&s.Templates, "scale-templates", 64, "scale mode: distinct record sets the bulk repos cycle through")
	fs.StringVar(&s.Profile, "scale-profile", "", "scale mode: directory for a CPU profile of the indexer at each size")
	fs.IntVar(&s.Batch, "scale-batch", 0, "scale mode: bulk repos added to the filter at a time (default: 1M records' worth, fewer for small sizes)")
	fs.DurationVar(&s.Deadline, "scale-deadline", 0, "scale mode: stop growing after this long and measure the size reached (0: no deadline)")
	fs.StringVar(&s.hosts, "scale-hosts", "", "internal: the bulk source's host URLs")
	fs.StringVar(&s.keys, "scale-keys", "", "internal: file of sampled record keys per template")
}

// parseSizes parses "1M,10M,50M" (suffixes k, M, G; case-insensitive k)
// into increasing record counts.
func parseSizes(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mult := int64(1)
		switch {
		case strings.HasSuffix(f, "k"), strings.HasSuffix(f, "K"):
			mult, f = 1_000, f[:len(f)-1]
		case strings.HasSuffix(f, "M"):
			mult, f = 1_000_000, f[:len(f)-1]
		case strings.HasSuffix(f, "G"):
			mult, f = 1_000_000_000, f[:len(f)-1]
		}
		n, err := strconv.ParseFloat(f, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-scale: %q is not a positive record count (like 2k, 1M, 1.5M)", f)
		}
		out = append(out, int64(n*float64(mult)))
	}
	if len(out) == 0 {
		return nil, errors.New("-scale: no sizes")
	}
	if !slices.IsSorted(out) {
		return nil, fmt.Errorf("-scale: sizes must increase: %s", s)
	}
	return out, nil
}

// Bulk repos: repo i has the DID bulkDID(i), the K-256 key bulkKey(i),
// and the records of template i % Templates, under a commit signed when
// its getRepo is served. Nothing per repo is kept.

const bulkDIDPrefix = "did:plc:scale"

const base32Alphabet = "abcdefghijklmnopqrstuvwxyz234567"

// bulkDID returns the DID of bulk repo i: "did:plc:scale" and i in 19
// base-32 digits (a valid did:plc of 24 characters).
func bulkDID(i int) string {
	var b [19]byte
	for k := len(b) - 1; k >= 0; k-- {
		b[k] = base32Alphabet[i&31]
		i >>= 5
	}
	return bulkDIDPrefix + string(b[:])
}

// bulkIndex is the inverse of bulkDID.
func bulkIndex(did string) (int, bool) {
	rest, ok := strings.CutPrefix(did, bulkDIDPrefix)
	if !ok || len(rest) != 19 {
		return 0, false
	}
	i := 0
	for _, c := range []byte(rest) {
		d := strings.IndexByte(base32Alphabet, c)
		if d < 0 {
			return 0, false
		}
		i = i<<5 | d
	}
	return i, true
}

// bulkKey derives bulk repo i's signing key from its index.
func bulkKey(i int) (*atcrypto.PrivateKeyK256, error) {
	seed := sha256.Sum256([]byte("cistern-bench-scale/" + strconv.Itoa(i)))
	return atcrypto.ParsePrivateBytesK256(seed[:])
}

// bulkRev is the rev of every bulk repo's commit.
var bulkRev = syntax.NewTID(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(), 0).String()

// template is one record set: its MST root and the CAR sections of its
// MST nodes and records (everything but the header and the commit).
type template struct {
	root cid.Cid
	body []byte
}

// newTemplate splits an account's CAR (header, commit, then the rest).
func newTemplate(a *testnet.Account) (template, error) {
	b, err := a.CAR()
	if err != nil {
		return template{}, err
	}
	rest := b
	for range 2 { // the header, then the commit block
		n, k := binary.Uvarint(rest)
		if k <= 0 || uint64(len(rest)-k) < n {
			return template{}, errors.New("scale: template CAR is truncated")
		}
		rest = rest[k+int(n):]
	}
	return template{root: a.DataCID(), body: rest}, nil
}

// bulkSource serves getRepo for the bulk repos on several loopback hosts.
type bulkSource struct {
	templates []template
	hosts     []string
	servers   []*http.Server
}

func startBulkSource(templates []template, hosts int) (*bulkSource, error) {
	s := &bulkSource{templates: templates}
	for range hosts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.Close()
			return nil, err
		}
		srv := &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
		s.servers = append(s.servers, srv)
		s.hosts = append(s.hosts, "http://"+ln.Addr().String())
		go srv.Serve(ln) //nolint:errcheck // ends with Close
	}
	return s, nil
}

func (s *bulkSource) Close() {
	for _, srv := range s.servers {
		srv.Close()
	}
}

func (s *bulkSource) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/xrpc/com.atproto.sync.getRepo" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotImplemented)
		io.WriteString(w, `{"error":"MethodNotImplemented","message":"the scale bench source serves getRepo only"}`)
		return
	}
	did := r.URL.Query().Get("did")
	i, ok := bulkIndex(did)
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"RepoNotFound","message":"not a bulk repo"}`)
		return
	}
	var buf bytes.Buffer
	if err := s.writeCAR(&buf, i, did); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/vnd.ipld.car")
	w.Write(buf.Bytes())
}

// writeCAR writes bulk repo i's CAR: a commit of its template's MST root,
// signed with its key now, then the template's blocks.
func (s *bulkSource) writeCAR(w io.Writer, i int, did string) error {
	t := s.templates[i%len(s.templates)]
	key, err := bulkKey(i)
	if err != nil {
		return err
	}
	c := repo.Commit{DID: did, Version: repo.ATPROTO_REPO_VERSION, Data: t.root, Rev: bulkRev}
	if err := c.Sign(key); err != nil {
		return err
	}
	var cb bytes.Buffer
	if err := c.MarshalCBOR(&cb); err != nil {
		return err
	}
	cc, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(cb.Bytes())
	if err != nil {
		return err
	}
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{cc}, Version: 1}, w); err != nil {
		return err
	}
	if err := carutil.LdWrite(w, cc.Bytes(), cb.Bytes()); err != nil {
		return err
	}
	_, err = w.Write(t.body)
	return err
}

// bulkResolver resolves bulk DIDs locally (PDS host i % len(hosts), key
// derived from i) and everything else with next.
type bulkResolver struct {
	hosts []string
	next  resolver.Resolver
}

func (r *bulkResolver) Resolve(ctx context.Context, did syntax.DID) (*resolver.Identity, error) {
	i, ok := bulkIndex(did.String())
	if !ok {
		return r.next.Resolve(ctx, did)
	}
	key, err := bulkKey(i)
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	return &resolver.Identity{DID: did, Handle: syntax.HandleInvalid, PDS: r.hosts[i%len(r.hosts)], SigningKey: pub}, nil
}

func (r *bulkResolver) ResolveHandle(ctx context.Context, h syntax.Handle) (syntax.DID, error) {
	return r.next.ResolveHandle(ctx, h)
}

func (r *bulkResolver) Purge(ctx context.Context, did syntax.DID) error {
	if _, ok := bulkIndex(did.String()); ok {
		return nil
	}
	return r.next.Purge(ctx, did)
}

// ScaleResult is what the scale mode measured; -json writes it.
type ScaleResult struct {
	Machine      Machine       `json:"machine"`
	Command      string        `json:"command"`
	Records      int           `json:"recordsPerRepo"`
	Templates    int           `json:"templates"`
	LiveRate     float64       `json:"liveCommitsPerSec"`
	QueryRate    float64       `json:"queryRate"`
	Window       float64       `json:"windowSeconds"`
	RawPerRecord float64       `json:"rawBytesPerRecord"`
	Points       []*ScalePoint `json:"points"`
	// Reached is the largest record count the store reached.
	Reached int64   `json:"reached"`
	Seconds float64 `json:"seconds"`
}

// ScalePoint is the measurement at one size.
type ScalePoint struct {
	Size int64 `json:"size"`
	// At is the time since the start when the store reached Size.
	At float64 `json:"atSeconds"`
	// RecordsPerSec is the ingest rate from 90% of Size to Size (backfill
	// with the live load running), and RecordsPerCPUSecond the same
	// records over the indexer process's CPU time in that stretch.
	RecordsPerSec       float64 `json:"recordsPerSec"`
	RecordsPerCPUSecond float64 `json:"recordsPerCPUSecond"`
	// WindowRecordsPerSec is the ingest rate during the query window.
	WindowRecordsPerSec float64 `json:"windowRecordsPerSec"`
	DiskBytes           int64   `json:"diskBytes"`
	BytesPerRecord      float64 `json:"bytesPerRecord"`
	RSS                 int64   `json:"rssBytes"`
	PeakRSS             int64   `json:"peakRSSBytes"`
	HeapBytes           int64   `json:"heapBytes"`
	// WrittenPerRecord is the bytes the indexer process caused to be
	// written to storage (/proc/self/io write_bytes: page writes, fsyncs)
	// per record ingested from 90% of Size to Size.
	WrittenPerRecord float64 `json:"writtenBytesPerRecord"`
	Get              Latency `json:"getRecord"`
	List             Latency `json:"listRecords"`
	// LiveCommits is how many live commits the indexer stored during the
	// window (its newest event id grows with them and the backfill), as
	// counted by the producer.
	LiveCommits int64   `json:"liveCommits"`
	LoadAvg     string  `json:"loadavg"`
	Rejected    int64   `json:"rejected"`
	Errors      int64   `json:"repoErrors"`
	CPUSeconds  float64 `json:"cpuSeconds"`
}

// Latency summarises one kind of query in a window.
type Latency struct {
	N      int     `json:"n"`
	Misses int     `json:"misses"`
	Errors int     `json:"errors"`
	P50ms  float64 `json:"p50ms"`
	P99ms  float64 `json:"p99ms"`
	Maxms  float64 `json:"maxms"`
}

func runScale(o options, s scaleOptions) error {
	ctx := context.Background()
	if _, err := parseSizes(s.Sizes); err != nil {
		return err
	}
	if o.Records <= 0 || s.Templates <= 0 || s.LiveRepos <= 0 {
		return errors.New("-scale: -records, -scale-templates and -scale-live-repos must be positive")
	}
	if o.Hosts <= 0 {
		o.Hosts = 4
	}
	dir, cleanup, err := workDir(o.Dir, "cistern-bench-scale-")
	if err != nil {
		return err
	}
	defer cleanup()
	res := &ScaleResult{Machine: machine(), Command: strings.Join(os.Args[1:], " "), Records: o.Records,
		Templates: s.Templates, LiveRate: s.LiveRate, QueryRate: s.QueryRate, Window: s.Window}

	tn, err := testnet.Start(ctx, testnet.Options{Hosts: 1, Retention: 1 << 14, Seed: 12,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer tn.Close()
	progress("scale: %d templates of %d records, %d live repos of %d", s.Templates, o.Records, s.LiveRepos, s.LiveRecords)
	tmpl, err := tn.Generate(ctx, testnet.GenerateOptions{Accounts: s.Templates, Records: o.Records})
	if err != nil {
		return err
	}
	templates := make([]template, len(tmpl))
	var keys strings.Builder
	var raw, nrec int64
	for k, a := range tmpl {
		if templates[k], err = newTemplate(a); err != nil {
			return err
		}
		recs := a.Records()
		keys.WriteString(recs[0].Collection)
		for j := 0; j < len(recs); j += max(1, len(recs)/32) {
			keys.WriteString(" " + recs[j].RKey)
		}
		keys.WriteString("\n")
		for _, r := range recs {
			nrec++
			raw += int64(len(r.Value) + len(bulkDID(0)) + len(r.Collection) + len(r.RKey) + len(r.CID.Bytes()))
		}
	}
	res.RawPerRecord = float64(raw) / float64(nrec)
	keysFile := filepath.Join(dir, "scale-keys.txt")
	if err := os.WriteFile(keysFile, []byte(keys.String()), 0o644); err != nil {
		return err
	}
	live, err := tn.Generate(ctx, testnet.GenerateOptions{Accounts: s.LiveRepos, Records: s.LiveRecords})
	if err != nil {
		return err
	}
	var dids strings.Builder
	for _, a := range live {
		dids.WriteString(a.DID().String() + "\n")
	}
	didFile := filepath.Join(dir, "live-dids.txt")
	if err := os.WriteFile(didFile, []byte(dids.String()), 0o644); err != nil {
		return err
	}
	src, err := startBulkSource(templates, o.Hosts)
	if err != nil {
		return err
	}
	defer src.Close()

	db := filepath.Join(dir, "scale.db")
	args := []string{"-role", "scale", "-db", db, "-dids", didFile, "-plc", tn.PLCURL(), "-relay", tn.RelayURL(),
		"-verify", o.Verify, "-records", strconv.Itoa(o.Records), "-firehose-workers", strconv.Itoa(o.FirehoseWorkers),
		"-scale", s.Sizes, "-scale-window", fmt.Sprint(s.Window), "-scale-query-rate", fmt.Sprint(s.QueryRate),
		"-scale-templates", strconv.Itoa(s.Templates), "-scale-profile", s.Profile, "-scale-batch", strconv.Itoa(s.Batch),
		"-scale-deadline", s.Deadline.String(),
		"-scale-hosts", strings.Join(src.hosts, ","), "-scale-keys", keysFile}
	var load *testnet.Load
	var windowStart int64
	start := time.Now()
	onLine := func(line string, _ io.Writer) error {
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && f[0] == "LOAD":
			progress("scale: live repos synced; live load of %.0f commits/s starts", s.LiveRate)
			if s.LiveRate > 0 {
				load = tn.StartLoad(testnet.LoadOptions{Accounts: live, Rate: s.LiveRate, Workers: 2})
			}
		case len(f) >= 2 && f[0] == "WINDOW":
			n := int64(0)
			if load != nil {
				n = load.Commits()
			}
			if f[1] == "start" {
				windowStart = n
			} else {
				// "WINDOW end <size>": the child's result carries the rest.
				res.Points = append(res.Points, &ScalePoint{LiveCommits: n - windowStart})
			}
		case len(f) >= 1 && f[0] == "PROGRESS":
			progress("scale: %s", strings.Join(f[1:], " "))
		}
		return nil
	}
	progress("scale: growing to %s (store %s)", s.Sizes, db)
	var child_ ScaleResult
	err = child(args, &child_, onLine)
	if load != nil {
		load.Stop()
	}
	if err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	for k, p := range child_.Points {
		if k < len(res.Points) {
			p.LiveCommits = res.Points[k].LiveCommits
		}
	}
	res.Points, res.Reached = child_.Points, child_.Reached
	res.Seconds = time.Since(start).Seconds()
	printScaleTable(os.Stdout, res)
	if o.JSON != "" {
		b, err := jsonIndent(res)
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.JSON, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func printScaleTable(w io.Writer, r *ScaleResult) {
	fmt.Fprintf(w, "\ncistern bench -scale: %s, %d CPUs, %s; repos of %d records (%d templates), live load %.0f commits/s, queries %.0f/s each\n\n",
		r.Machine.CPU, r.Machine.CPUs, r.Machine.GoVersion, r.Records, r.Templates, r.LiveRate, r.QueryRate)
	fmt.Fprintf(w, "| records | reached after | records/s (90%%→100%%) | records per CPU-s | records/s in window | disk B/record | written B/record | RSS (peak) | getRecord p50/p99 | listRecords p50/p99 | live commits in window | load avg |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.Points {
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %s (%s) | %.2f / %.2f ms | %.2f / %.2f ms | %d | %s |\n",
			humanCount(p.Size), (time.Duration(p.At) * time.Second).String(), p.RecordsPerSec, p.RecordsPerCPUSecond, p.WindowRecordsPerSec,
			p.BytesPerRecord, p.WrittenPerRecord, mib(p.RSS), mib(p.PeakRSS), p.Get.P50ms, p.Get.P99ms, p.List.P50ms, p.List.P99ms, p.LiveCommits, p.LoadAvg)
	}
	if n := len(r.Points); n >= 2 && r.Points[n-1].RecordsPerSec > 0 {
		first, last := r.Points[0], r.Points[n-1]
		ratio := first.RecordsPerSec / last.RecordsPerSec
		verdict := "met"
		if ratio > 2 {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "\nrecords/s at %s divided by records/s at %s: %.2f (goal ≤ 2: %s); per CPU-second: %.2f\n",
			humanCount(first.Size), humanCount(last.Size), ratio, verdict, first.RecordsPerCPUSecond/last.RecordsPerCPUSecond)
	}
	fmt.Fprintf(w, "raw value+keys %.0f B/record; largest size reached %s in %.0f s\n\n", r.RawPerRecord, humanCount(r.Reached), r.Seconds)
}

func humanCount(n int64) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1_000 && n%100 == 0:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatInt(n, 10)
}

// childScale is the indexer side of the scale mode: it tracks the live
// repos, tells the parent to start the load, then adds bulk repos to the
// filter in batches and measures at each size.
func childScale(a childArgs, s scaleOptions) (*ScaleResult, error) {
	sizes, err := parseSizes(s.Sizes)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(a.DIDFile)
	if err != nil {
		return nil, err
	}
	liveDIDs := strings.Fields(string(raw))
	samples, err := readSamples(s.keys)
	if err != nil {
		return nil, err
	}
	mode, err := cistern.ParseVerifyMode(a.Verify)
	if err != nil {
		return nil, err
	}
	hosts := strings.Split(s.hosts, ",")
	batch := s.Batch
	if batch <= 0 {
		batch = max(2, 1_000_000/max(1, a.Records))
		// Small runs (the CI smoke test) add a few repos at a time.
		batch = min(batch, max(2, int(sizes[0]/int64(max(1, a.Records))/4)))
	}
	st, err := boltstore.Open(a.DB, nil)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	res := &ScaleResult{}
	ix, err := cistern.Open(cistern.Config{
		Store:           st,
		Filter:          filter.Spec{DIDs: liveDIDs},
		RelayURL:        a.Relay,
		NoCrawl:         true,
		Resolver:        &bulkResolver{hosts: hosts, next: resolver.NewCached(resolver.Options{PLCURL: a.PLC, SkipHandleVerification: true})},
		Verify:          mode,
		FirehoseWorkers: a.FirehoseWorkers,
		Backfill:        cistern.BackfillConfig{Strategy: backfill.StrategyFull},
		Logger:          childLogger(),
	})
	if err != nil {
		return nil, err
	}
	defer ix.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- ix.Run(ctx) }()
	var addDone chan error // the batch being added, if any
	stop := func() error {
		cancel()
		if addDone != nil {
			<-addDone
			addDone = nil
		}
		return <-runDone
	}
	start := time.Now()
	stats := func() (*cistern.Stats, error) {
		select {
		case err := <-runDone:
			runDone <- err
			return nil, fmt.Errorf("indexer stopped: %v", err)
		default:
		}
		return ix.Stats(ctx)
	}
	for {
		stt, err := stats()
		if err != nil {
			return nil, err
		}
		if stt.Repos["synced"] >= int64(len(liveDIDs)) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("LOAD")

	// Bulk repos are added to the filter in batches by one goroutine at a
	// time (SetFilter tracks each new DID in its own write, which takes a
	// while), ahead of the backfill, so that the measuring loop never waits
	// for it and the backfill never runs dry.
	dids := slices.Clone(liveDIDs)
	added := 0 // bulk repos added to the filter (or being added)
	defer func() {
		cancel()
		if addDone != nil {
			<-addDone
		}
	}()
	addBatch := func() {
		n := batch
		if added == 0 {
			n = min(batch, 64) // a quick start
		}
		for range n {
			dids = append(dids, bulkDID(added))
			added++
		}
		spec := filter.Spec{DIDs: slices.Clone(dids)}
		done := make(chan error, 1)
		addDone = done
		go func() { done <- ix.SetFilter(ctx, spec) }()
	}
	type mark struct {
		t       time.Time
		records int64
		cpu     float64
		written int64 // bytes this process has written to storage
	}
	var (
		from    *mark // at 90% of the size being approached
		prev    = mark{time.Now(), 0, cpuSeconds(), writeBytes()}
		next    = 0 // index in sizes
		window  *queryWindow
		point   *ScalePoint
		winFrom mark
		prof    *os.File
	)
	lastProgress, lastRecords := time.Now(), int64(0)
	var history []mark // every poll, for the deadline's stretch
	deadlined := false
	for next < len(sizes) {
		stt, err := stats()
		if err != nil {
			return nil, err
		}
		if n := stt.Repos["error"]; n > 0 {
			return nil, fmt.Errorf("%d repos failed to backfill (BENCH_LOG=warn says why)", n)
		}
		now := time.Now()
		synced := stt.Repos["synced"] - int64(len(liveDIDs))
		if addDone != nil {
			select {
			case err := <-addDone:
				addDone = nil
				if err != nil {
					return nil, fmt.Errorf("add repos to the filter: %w", err)
				}
			default:
			}
		}
		if addDone == nil && int64(added)-synced < int64(batch)*3/2 {
			addBatch()
		}
		res.Reached = stt.Records
		if now.Sub(lastProgress) > 30*time.Second {
			rate := float64(stt.Records-lastRecords) / now.Sub(lastProgress).Seconds()
			lastProgress, lastRecords = now, stt.Records
			fmt.Printf("PROGRESS %d records, %d bulk repos synced, %.0f s, %.0f records/s, disk %s, load %s\n",
				stt.Records, synced, now.Sub(start).Seconds(), rate, mib(stt.DiskBytes), loadAvg())
		}
		if s.Deadline > 0 && !deadlined && now.Sub(start) >= s.Deadline && window == nil {
			// Measure the size reached as the last point, its rate over
			// the stretch from 90% of it.
			deadlined = true
			sizes = append(sizes[:next], stt.Records)
			k := len(history) - 1
			for k > 0 && history[k].records*10 > stt.Records*9 {
				k--
			}
			if k >= 0 {
				h := history[k]
				from = &h
			}
			fmt.Printf("PROGRESS deadline: measuring at %d records\n", stt.Records)
		}
		size := sizes[next]
		if from == nil && window == nil && stt.Records*10 >= size*9 {
			// From the poll before the crossing, so that the stretch is
			// never empty.
			p := prev
			from = &p
			if s.Profile != "" {
				if prof, err = os.Create(filepath.Join(s.Profile, "scale-"+humanCount(size)+".cpu.pprof")); err != nil {
					return nil, err
				}
				if err := pprof.StartCPUProfile(prof); err != nil {
					return nil, err
				}
			}
		}
		if window == nil && from != nil && stt.Records >= size {
			cpu := cpuSeconds()
			point = &ScalePoint{Size: size, At: now.Sub(start).Seconds(),
				RecordsPerSec:  float64(stt.Records-from.records) / now.Sub(from.t).Seconds(),
				DiskBytes:      stt.DiskBytes,
				BytesPerRecord: float64(stt.DiskBytes) / float64(stt.Records),
				RSS:            vmRSS(), PeakRSS: peakRSS(), HeapBytes: heapBytes(), LoadAvg: loadAvg(),
				CPUSeconds: cpu}
			if d := cpu - from.cpu; d > 0 {
				point.RecordsPerCPUSecond = float64(stt.Records-from.records) / d
			}
			if n := stt.Records - from.records; n > 0 && from.written >= 0 {
				point.WrittenPerRecord = float64(writeBytes()-from.written) / float64(n)
			}
			for _, n := range stt.Rejected {
				point.Rejected += n
			}
			point.Errors = stt.Repos["error"]
			fmt.Printf("PROGRESS reached %s after %.0f s: %.0f records/s (90%%→100%%), %.0f B/record, RSS %s\n",
				humanCount(size), point.At, point.RecordsPerSec, point.BytesPerRecord, mib(point.RSS))
			fmt.Println("WINDOW start")
			winFrom = mark{now, stt.Records, cpu, writeBytes()}
			// Query repos well behind the backfill's frontier (16 repos
			// are fetched at once by default); a miss is counted apart.
			window = startQueries(ctx, ix, samples, max(int(synced)-32, int(synced)/2), s.QueryRate)
		}
		if window != nil && now.Sub(winFrom.t).Seconds() >= s.Window {
			point.Get, point.List = window.stop()
			point.WindowRecordsPerSec = float64(stt.Records-winFrom.records) / now.Sub(winFrom.t).Seconds()
			fmt.Println("WINDOW end")
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
				prof = nil
			}
			fmt.Printf("PROGRESS %s: getRecord p50 %.2f p99 %.2f ms (%d, %d misses), listRecords p50 %.2f p99 %.2f ms (%d)\n",
				humanCount(size), point.Get.P50ms, point.Get.P99ms, point.Get.N, point.Get.Misses, point.List.P50ms, point.List.P99ms, point.List.N)
			res.Points = append(res.Points, point)
			// Print the points so far, so a run stopped early still says them.
			if b, err := jsonIndent(point); err == nil {
				fmt.Fprintf(os.Stderr, "scale point: %s", b)
			}
			window, from, point = nil, nil, nil
			next++
			continue
		}
		prev = mark{now, stt.Records, cpuSeconds(), writeBytes()}
		history = append(history, prev)
		time.Sleep(250 * time.Millisecond)
	}
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return res, nil
}

// readSamples reads the parent's key file: per template, the collection
// and some of its record keys.
func readSamples(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 {
			out = append(out, fs)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no sampled keys", path)
	}
	return out, sc.Err()
}

// queryWindow runs getRecord and listRecords at a steady rate on bulk
// repos below a bound (already backfilled) and records their latencies.
type queryWindow struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	get    latencies
	list   latencies
}

type latencies struct {
	d              []time.Duration
	misses, errors int
}

func (l *latencies) summary() Latency {
	slices.Sort(l.d)
	out := Latency{N: len(l.d), Misses: l.misses, Errors: l.errors}
	if n := len(l.d); n > 0 {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		out.P50ms, out.P99ms, out.Maxms = ms(l.d[n/2]), ms(l.d[n*99/100]), ms(l.d[n-1])
	}
	return out
}

func startQueries(ctx context.Context, ix *cistern.Indexer, samples [][]string, repos int, rate float64) *queryWindow {
	ctx, cancel := context.WithCancel(ctx)
	w := &queryWindow{cancel: cancel}
	if repos <= 0 || rate <= 0 {
		return w
	}
	run := func(seed uint64, l *latencies, q func(did, coll, rkey string) error) {
		defer w.wg.Done()
		rng := rand.New(rand.NewPCG(seed, 42))
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			i := rng.IntN(repos)
			sm := samples[i%len(samples)]
			rkey := sm[1+rng.IntN(len(sm)-1)]
			t := time.Now()
			err := q(bulkDID(i), sm[0], rkey)
			d := time.Since(t)
			switch {
			case err == nil:
				l.d = append(l.d, d)
			case errors.Is(err, cistern.ErrRecordNotFound), errors.Is(err, errEmptyPage):
				l.misses++
			case ctx.Err() != nil:
				return
			default:
				l.errors++
			}
		}
	}
	w.wg.Add(2)
	go run(1, &w.get, func(did, coll, rkey string) error {
		_, err := ix.GetRecord(ctx, did, coll, rkey)
		return err
	})
	go run(2, &w.list, func(did, coll, rkey string) error {
		p, err := ix.ListRecords(ctx, did, coll, cistern.ListOptions{Limit: 50, Cursor: rkey})
		if err == nil && len(p.Records) == 0 {
			return errEmptyPage
		}
		return err
	})
	return w
}

var errEmptyPage = errors.New("empty page")

func (w *queryWindow) stop() (get, list Latency) {
	w.cancel()
	w.wg.Wait()
	return w.get.summary(), w.list.summary()
}

// writeBytes returns the bytes this process has caused to be written to
// storage (/proc/self/io write_bytes), or -1.
func writeBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "write_bytes:"); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}

// vmRSS returns the process's current resident set size, or -1.
func vmRSS() int64 { return procStatusKB("VmRSS:") }

func procStatusKB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return -1
}

func heapBytes() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// runScaleChild runs childScale and prints its result for the parent.
func runScaleChild(a childArgs, s scaleOptions) error {
	res, err := childScale(a, s)
	if err != nil {
		return err
	}
	return printResult(res)
}
