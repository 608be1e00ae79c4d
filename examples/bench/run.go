package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cistern-dev/cistern/testnet"
)

// options are the parent's flags.
type options struct {
	Repos, Records, LiveCommits int
	Hosts                       int
	LagRate, LagSeconds         float64
	Subscribers, StreamEvents   int
	FirehoseWorkers             int
	Verify                      string
	NoVerifyLive, Limits        bool
	Dir, JSON                   string
	// Store is "" (bbolt in Dir), a postgres:// URL (a fresh schema on
	// that server) or "throwaway" (a durable PostgreSQL server started
	// for the run).
	Store string

	// SpreadRepos is how many small accounts a second live backlog is
	// spread over (0 skips it).
	SpreadRepos int

	ServerRepos, ServerRecords int
	ServerArgs                 string
	ServerOnly                 bool
	ServerProfileSeconds       int
}

// Results is everything one run measured; it is what -json writes.
type Results struct {
	Machine  Machine         `json:"machine"`
	Options  options         `json:"options"`
	Setup    Setup           `json:"setup"`
	Limits   *LimitsResult   `json:"limits,omitempty"`
	Server   *ServerResult   `json:"server,omitempty"`
	Backfill *BackfillResult `json:"backfill"`
	Disk     Disk            `json:"disk"`
	Live     []*LiveResult   `json:"live"`
	Stream   *StreamResult   `json:"stream"`
}

// Machine says where the numbers were measured.
type Machine struct {
	CPU       string `json:"cpu"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Date      string `json:"date"`
}

// Setup is the generated network.
type Setup struct {
	GenerateSeconds     float64 `json:"generateSeconds"`
	LiveGenerateSeconds float64 `json:"liveGenerateSeconds"`
	RawValueBytes       int64   `json:"rawValueBytes"`
	RawKeyBytes         int64   `json:"rawKeyBytes"`
	Records             int64   `json:"records"`
}

// Disk compares the store's size with the raw record bytes.
type Disk struct {
	BytesPerRecord    float64 `json:"bytesPerRecord"`
	RawBytesPerRecord float64 `json:"rawBytesPerRecord"`
	Ratio             float64 `json:"ratio"`
}

func run(o options) error {
	ctx := context.Background()
	if o.Hosts <= 0 {
		o.Hosts = 4
	}
	res := &Results{Options: o, Machine: machine()}
	dir, cleanup, err := workDir(o.Dir, "cistern-bench-")
	if err != nil {
		return err
	}
	defer cleanup()

	if o.ServerRepos > 0 {
		var err error
		res.Server, err = runServerPath(dir, o.ServerRepos, o.ServerRecords, strings.Fields(o.ServerArgs),
			os.Getenv("BENCH_PROFILE"), o.ServerProfileSeconds, progress)
		if err != nil {
			return fmt.Errorf("server path: %w", err)
		}
	}
	if o.ServerOnly {
		return report(o, res)
	}

	retention := o.LiveCommits + int(o.LagRate*o.LagSeconds*2) + 1024
	if o.SpreadRepos > 0 {
		retention += o.LiveCommits + o.SpreadRepos
	}
	net, err := testnet.Start(ctx, testnet.Options{Hosts: o.Hosts, Retention: retention,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer net.Close()
	progress("generating %d repos × %d records on %d hosts", o.Repos, o.Records, o.Hosts)
	t := time.Now()
	accts, err := net.Generate(ctx, testnet.GenerateOptions{Accounts: o.Repos, Records: o.Records})
	if err != nil {
		return err
	}
	res.Setup.GenerateSeconds = time.Since(t).Seconds()
	var dids strings.Builder
	for _, a := range accts {
		dids.WriteString(a.DID().String() + "\n")
		for _, r := range a.Records() {
			res.Setup.Records++
			res.Setup.RawValueBytes += int64(len(r.Value))
			res.Setup.RawKeyBytes += int64(len(a.DID()) + len(r.Collection) + len(r.RKey) + len(r.CID.Bytes()))
		}
	}
	didFile := filepath.Join(dir, "dids.txt")
	if err := os.WriteFile(didFile, []byte(dids.String()), 0o644); err != nil {
		return err
	}

	if o.Limits && len(accts) > 0 {
		progress("measuring raw limits (bbolt, CAR parse, K-256 verify)")
		carData, err := accts[0].CAR()
		if err != nil {
			return err
		}
		if res.Limits, err = measureLimits(dir, carData, o.Records, accts[0].PrivateKey()); err != nil {
			return fmt.Errorf("limits: %w", err)
		}
	}

	db := filepath.Join(dir, "cistern.db")
	if o.Store != "" {
		url, stop, err := pgDatabase(ctx, o.Store)
		if err != nil {
			return fmt.Errorf("-store: %w", err)
		}
		defer stop()
		db = url
		if o.NoVerifyLive {
			progress("-store is PostgreSQL: the live run without verification is skipped (it needs a copy of the store)")
			o.NoVerifyLive = false
		}
		res.Options.NoVerifyLive = false
	}
	common := []string{"-plc", net.PLCURL(), "-relay", net.RelayURL(), "-firehose-workers", strconv.Itoa(o.FirehoseWorkers)}
	progress("backfill: %d repos, verify %s", o.Repos, o.Verify)
	res.Backfill = new(BackfillResult)
	if err := child(append(common, "-role", "backfill", "-db", db, "-dids", didFile, "-verify", o.Verify), res.Backfill, nil); err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	if res.Setup.Records > 0 {
		res.Disk.BytesPerRecord = float64(res.Backfill.DiskBytes) / float64(res.Setup.Records)
		res.Disk.RawBytesPerRecord = float64(res.Setup.RawValueBytes+res.Setup.RawKeyBytes) / float64(res.Setup.Records)
		res.Disk.Ratio = res.Disk.BytesPerRecord / res.Disk.RawBytesPerRecord
	}

	if o.LiveCommits > 0 && len(accts) > 0 {
		// A first frame, so that the backlog starts after a cursor > 0 (0
		// means "the live tip" to a firehose client).
		if _, err := net.CreateAccount(""); err != nil {
			return err
		}
		cursor := net.Relay().Seq()
		progress("writing %d live commits to the relay", o.LiveCommits)
		t = time.Now()
		load := net.StartLoad(testnet.LoadOptions{Accounts: accts})
		for load.Commits() < int64(o.LiveCommits) {
			time.Sleep(5 * time.Millisecond)
		}
		load.Stop()
		res.Setup.LiveGenerateSeconds = time.Since(t).Seconds()
		until := net.Relay().Seq()
		if o.NoVerifyLive {
			if err := copyFile(db, db+".noverify"); err != nil {
				return err
			}
		}
		args := append(common, "-role", "live", "-db", db, "-verify", o.Verify,
			"-cursor", strconv.FormatInt(cursor, 10), "-until", strconv.FormatInt(until, 10))
		if o.LagRate > 0 {
			args = append(args, "-lag")
		}
		progress("live: %d commits from the firehose backlog, verify %s", until-cursor, o.Verify)
		lr := new(LiveResult)
		onLine := func(line string, stdin io.Writer) error {
			if line != "CAUGHTUP" {
				return nil
			}
			progress("live: lag under %.0f commits/s for %.0f s", o.LagRate, o.LagSeconds)
			l := net.StartLoad(testnet.LoadOptions{Accounts: accts, Rate: o.LagRate})
			time.Sleep(time.Duration(o.LagSeconds * float64(time.Second)))
			l.Stop()
			_, err := fmt.Fprintf(stdin, "UNTIL %d %g\n", net.Relay().Seq(), float64(l.Commits())/o.LagSeconds)
			return err
		}
		if err := child(args, lr, onLine); err != nil {
			return fmt.Errorf("live: %w", err)
		}
		res.Live = append(res.Live, lr)
		if o.NoVerifyLive {
			progress("live: the same backlog, verify none")
			lr := new(LiveResult)
			args := append(common, "-role", "live", "-db", db+".noverify", "-verify", "none",
				"-cursor", strconv.FormatInt(cursor, 10), "-until", strconv.FormatInt(until, 10))
			if err := child(args, lr, nil); err != nil {
				return fmt.Errorf("live (verify none): %w", err)
			}
			res.Live = append(res.Live, lr)
			os.Remove(db + ".noverify")
		}
	}

	if o.SpreadRepos > 0 && o.LiveCommits > 0 && o.Store == "" {
		if err := runSpread(ctx, o, net, db, didFile, common, res, progress); err != nil {
			return fmt.Errorf("live (spread): %w", err)
		}
	}

	progress("stream: replay to 1, then %d subscribers", o.Subscribers)
	res.Stream = new(StreamResult)
	if err := child(append(common, "-role", "stream", "-db", db, "-subscribers", strconv.Itoa(o.Subscribers),
		"-stream-events", strconv.Itoa(o.StreamEvents)), res.Stream, nil); err != nil {
		return fmt.Errorf("stream: %w", err)
	}

	return report(o, res)
}

// report prints the table and writes the JSON file if asked.
func report(o options, res *Results) error {
	printTable(os.Stdout, res)
	if o.JSON != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.JSON, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// child runs this binary with args, feeds every stdout line to onLine (with
// the child's stdin), and decodes its RESULT line into out.
func child(args []string, out any, onLine func(line string, stdin io.Writer) error) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	got := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 1<<20)
	var lineErr error
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, resultPrefix); ok {
			if err := json.Unmarshal([]byte(rest), out); err != nil {
				lineErr = err
			}
			got = true
			continue
		}
		if onLine != nil && lineErr == nil {
			lineErr = onLine(line, stdin)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return err
	}
	if lineErr != nil {
		return lineErr
	}
	if !got {
		return fmt.Errorf("child %v printed no result", args)
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func printTable(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\ncistern bench: %s, %d CPUs, %s\n", r.Machine.CPU, r.Machine.CPUs, r.Machine.GoVersion)
	if r.Backfill != nil {
		fmt.Fprintf(w, "library path: %d repos × %d records, %d PDS hosts, in-process network\n", r.Options.Repos, r.Options.Records, r.Options.Hosts)
	}
	if r.Server != nil {
		fmt.Fprintf(w, "user path: %d repos × %d records, one PDS host (examples/testnet)\n", r.Server.Repos, r.Options.ServerRecords)
	}
	fmt.Fprintln(w)
	row := func(what, value, target, note string) {
		fmt.Fprintf(w, "%-44s %-22s %-16s %s\n", what, value, target, note)
	}
	row("measure", "value", "target", "")
	row(strings.Repeat("-", 44), strings.Repeat("-", 22), strings.Repeat("-", 16), "")
	if sv := r.Server; sv != nil {
		args := ""
		if len(sv.Args) > 0 {
			args = " " + strings.Join(sv.Args, " ")
		}
		row("backfill records/s, user path", fmt.Sprintf("%.0f", sv.RecordsPerSec), "≥ 100000",
			fmt.Sprintf("examples/cistern%s ↔ examples/testnet over HTTP: %d repos, %d records in %.1f s", args, sv.Repos, sv.Records, sv.Seconds))
		row("  user path: records per server CPU-second", fmt.Sprintf("%.0f", float64(sv.Records)/sv.CPUSeconds), "",
			fmt.Sprintf("%.1f CPU-s; peak RSS %s", sv.CPUSeconds, mib(sv.PeakRSS)))
	}
	if b := r.Backfill; b != nil {
		row("backfill records/s (verify "+r.Options.Verify+")", fmt.Sprintf("%.0f", b.RecordsPerSec), "≥ 100000",
			fmt.Sprintf("%d records in %.1f s", b.Records, b.Seconds))
		row("backfill repos/s", fmt.Sprintf("%.1f", b.ReposPerSec), "", "")
		row("backfill records per indexer CPU-second", fmt.Sprintf("%.0f", float64(b.Records)/b.CPUSeconds), "",
			fmt.Sprintf("%.1f CPU-s in %.1f s wall", b.CPUSeconds, b.Seconds))
		row("backfill peak RSS (indexer process)", mib(b.PeakRSS), "flat", "peak Go heap "+mib(b.PeakHeap)+"; the rest is mostly the mapped store file")
		row("disk bytes/record", fmt.Sprintf("%.0f", r.Disk.BytesPerRecord), fmt.Sprintf("≤ %.0f", 1.5*r.Disk.RawBytesPerRecord),
			fmt.Sprintf("raw value+keys %.0f B, ratio %.2f", r.Disk.RawBytesPerRecord, r.Disk.Ratio))
	}
	for _, l := range r.Live {
		target := "≥ 10000"
		if l.Verify == "none" {
			target = "≥ 30000"
		}
		what := "live commits/s (verify " + l.Verify + ")"
		if l.Repos > 0 {
			what = fmt.Sprintf("live commits/s (verify %s, %d repos)", l.Verify, l.Repos)
		}
		row(what, fmt.Sprintf("%.0f", l.CommitsPerSec), target,
			fmt.Sprintf("%d commits in %.2f s (%.1f CPU-s), %d rejected, peak RSS %s", l.Commits, l.Seconds, l.CPUSeconds, l.Rejected, mib(l.PeakRSS)))
		if l.LagCommits > 0 {
			row(fmt.Sprintf("live lag at %.0f commits/s (p50/p99/max)", l.LagRate),
				fmt.Sprintf("%.0f/%.0f/%.0f ms", l.LagP50ms, l.LagP99ms, l.LagMaxms), "", "createdAt → subscriber, producer signing included")
		}
	}
	if s := r.Stream; s != nil {
		row("stream replay events/s, 1 subscriber", fmt.Sprintf("%.0f", s.OnePerSec), "≥ 200000",
			fmt.Sprintf("%d events, peak RSS %s", s.Events, mib(s.OnePeakRSS)))
		if s.Subscribers > 0 {
			row(fmt.Sprintf("stream replay events/s, %d subscribers", s.Subscribers), fmt.Sprintf("%.0f", s.ManyPerSec), "",
				fmt.Sprintf("%d events each, total; peak RSS %s", s.ManyEach, mib(s.ManyPeakRSS)))
		}
	}
	if l := r.Limits; l != nil {
		fmt.Fprintf(w, "\nraw limits (one goroutine):\n")
		row("bbolt puts/s, 1000 per fsynced tx, seq keys", fmt.Sprintf("%.0f", l.BoltSeqPutsPerSec), "", "40 B keys, 300 B values")
		row("bbolt puts/s, 1000 per fsynced tx, rand keys", fmt.Sprintf("%.0f", l.BoltRandPutsPerSec), "", "")
		row("CAR blocks/s (go-car, CIDs checked)", fmt.Sprintf("%.0f", l.CARBlocksPerSec), "", fmt.Sprintf("%.0f MB/s", l.CARMBPerSec))
		row("LoadRepoFromCAR + MST walk, records/s", fmt.Sprintf("%.0f", l.LoadRepoRecordsPerSec), "", "")
		row("K-256 signature verifications/s", fmt.Sprintf("%.0f", l.VerifiesPerSec), "", "")
	}
	fmt.Fprintln(w)
}

// spreadRecords is the number of records of each account of the spread
// backlog.
const spreadRecords = 10

// runSpread measures live ingestion with commits spread over many repos, as
// on the network, where the main backlog has about 40 commits per repo:
// o.SpreadRepos accounts of spreadRecords records are generated and
// backfilled into the store (beside the main repos), then o.LiveCommits
// commits to them, each to an account picked at random, are applied from
// the firehose backlog with full verification and, on a copy of the store,
// with none.
func runSpread(ctx context.Context, o options, net *testnet.Network, db, didFile string, common []string, res *Results, progress func(string, ...any)) error {
	progress("live (spread): generating %d repos × %d records", o.SpreadRepos, spreadRecords)
	accts, err := net.Generate(ctx, testnet.GenerateOptions{Accounts: o.SpreadRepos, Records: spreadRecords})
	if err != nil {
		return err
	}
	main, err := os.ReadFile(didFile)
	if err != nil {
		return err
	}
	dids := strings.Builder{}
	dids.Write(main)
	for _, a := range accts {
		dids.WriteString(a.DID().String() + "\n")
	}
	spreadFile := didFile + ".spread"
	if err := os.WriteFile(spreadFile, []byte(dids.String()), 0o644); err != nil {
		return err
	}
	progress("live (spread): backfilling them")
	if err := child(append(common, "-role", "backfill", "-db", db, "-dids", spreadFile, "-verify", o.Verify, "-profile-tag", "-spread"), new(BackfillResult), nil); err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	cursor := net.Relay().Seq()
	progress("live (spread): writing %d commits over %d repos", o.LiveCommits, o.SpreadRepos)
	load := net.StartLoad(testnet.LoadOptions{Accounts: accts})
	for load.Commits() < int64(o.LiveCommits) {
		time.Sleep(5 * time.Millisecond)
	}
	load.Stop()
	until := net.Relay().Seq()
	copyDB := db + ".spread"
	if o.NoVerifyLive {
		if err := copyFile(db, copyDB); err != nil {
			return err
		}
		defer os.Remove(copyDB)
	}
	runs := []struct{ db, verify string }{{db, o.Verify}}
	if o.NoVerifyLive {
		runs = append(runs, struct{ db, verify string }{copyDB, "none"})
	}
	for _, r := range runs {
		progress("live (spread): %d commits over %d repos, verify %s", until-cursor, o.SpreadRepos, r.verify)
		lr := &LiveResult{}
		if err := child(append(common, "-role", "live", "-db", r.db, "-verify", r.verify, "-profile-tag", "-spread",
			"-cursor", strconv.FormatInt(cursor, 10), "-until", strconv.FormatInt(until, 10)), lr, nil); err != nil {
			return err
		}
		lr.Repos = o.SpreadRepos
		res.Live = append(res.Live, lr)
	}
	return nil
}

// workDir returns dir, created if missing, or with dir "" a new temporary
// directory named after prefix, which cleanup removes.
func workDir(dir, prefix string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o755)
	}
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// progress prints one line of the bench's progress on stderr, with the time.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
