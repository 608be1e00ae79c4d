package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backfill"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(c *config) bool
		wantErr string
	}{
		{"defaults", nil, nil, func(c *config) bool {
			return c.DB == "./cistern.db" && c.Listen == "127.0.0.1:2470" && c.Relay == "wss://bsky.network" &&
				c.PLC == "https://plc.directory" && c.Verify == cistern.VerifyFull && c.Retention == 0 && !c.dbSet &&
				c.Strategy == backfill.StrategyAuto
		}, ""},
		{"backfill strategy", []string{"-backfill-strategy", "sparse"}, nil, func(c *config) bool {
			return c.Strategy == backfill.StrategySparse
		}, ""},
		{"backfill strategy from the environment", nil, map[string]string{"CISTERN_BACKFILL_STRATEGY": "full"}, func(c *config) bool {
			return c.Strategy == backfill.StrategyFull
		}, ""},
		{"flags", []string{"-db", "x.db", "-signal", "a.b.c, d.e.f", "-track", "did:plc:a,did:plc:b", "-verify", "none", "-retention", "72h"}, nil, func(c *config) bool {
			return c.DB == "x.db" && c.dbSet && slices.Equal(c.Signals, []string{"a.b.c", "d.e.f"}) &&
				len(c.Track) == 2 && c.Verify == cistern.VerifyNone && c.Retention == 72*time.Hour
		}, ""},
		{"environment", nil, map[string]string{"CISTERN_ADMIN_TOKEN": "t", "CISTERN_FULL_NETWORK": "true",
			"CISTERN_COLLECTIONS": "app.bsky.*", "CISTERN_BACKFILL_CONCURRENCY": "3", "CISTERN_LOG_LEVEL": "debug"}, func(c *config) bool {
			return c.AdminToken == "t" && c.FullNetwork && slices.Equal(c.Collections, []string{"app.bsky.*"}) && c.Concurrency == 3
		}, ""},
		{"handle verification", []string{"-skip-handle-verification"}, nil, func(c *config) bool {
			return c.SkipHandleVerification
		}, ""},
		{"flag wins over environment", []string{"-listen", ":1"}, map[string]string{"CISTERN_LISTEN": ":2"}, func(c *config) bool {
			return c.Listen == ":1"
		}, ""},
		{"scheduler defaults", nil, nil, func(c *config) bool {
			return c.Sched.PerHost == 16 && c.Sched.HostInterval == 0 && c.Sched.ByteBudget == 512<<20 && c.Sched.HandleChecks == 32
		}, ""},
		{"scheduler flags", []string{"-backfill-per-host", "2", "-backfill-host-interval", "250ms",
			"-backfill-byte-budget", "2GiB", "-handle-checks", "4"}, nil, func(c *config) bool {
			return c.Sched.PerHost == 2 && c.Sched.HostInterval == 250*time.Millisecond && c.Sched.ByteBudget == 2<<30 && c.Sched.HandleChecks == 4
		}, ""},
		{"byte budget in plain bytes, from the environment", nil, map[string]string{"CISTERN_BACKFILL_BYTE_BUDGET": "67108864"}, func(c *config) bool {
			return c.Sched.ByteBudget == 64<<20
		}, ""},
		{"bad byte budget", []string{"-backfill-byte-budget", "lots"}, nil, nil, "invalid size"},
		{"tiny byte budget", []string{"-backfill-byte-budget", "10KiB"}, nil, nil, "backfill-byte-budget"},
		{"zero per-host", []string{"-backfill-per-host", "0"}, nil, nil, "backfill-per-host"},
		{"negative host interval", []string{"-backfill-host-interval", "-1s"}, nil, nil, "backfill-host-interval"},
		{"zero handle checks", []string{"-handle-checks", "0"}, nil, nil, "handle-checks"},
		{"bad verify", []string{"-verify", "some"}, nil, nil, "verify mode"},
		{"bad backfill strategy", []string{"-backfill-strategy", "partial"}, nil, nil, `-backfill-strategy: backfill: unknown strategy "partial"`},
		{"bad environment", nil, map[string]string{"CISTERN_RETENTION": "soon"}, nil, "CISTERN_RETENTION"},
		{"bad log level", []string{"-log-level", "loud"}, nil, nil, "log-level"},
		{"negative retention", []string{"-retention", "-1h"}, nil, nil, "retention"},
		{"stray argument", []string{"serve"}, nil, nil, "unexpected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

// The binary, built as a newcomer would run it, serves the demo network
// and stops cleanly on SIGTERM.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cistern")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-demo", "-listen", "127.0.0.1:0", "-db", filepath.Join(dir, "demo.db"), "-log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	var out []string
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("cistern exited before %s; output:\n%s\nstderr:\n%s", what, strings.Join(out, "\n"), stderr.String())
			}
			out = append(out, l)
			return l
		case <-time.After(60 * time.Second):
			t.Fatalf("no %s; output:\n%s", what, strings.Join(out, "\n"))
		}
		return ""
	}

	// One startup line saying what is tracked and where it listens.
	first := next("startup line")
	m := regexp.MustCompile(`^cistern: tracking 3 explicit repo\(s\).*listening on (http://127\.0\.0\.1:\d+)`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("startup line %q", first)
	}
	base := m[1]
	if l := next("demo help"); !strings.HasPrefix(l, "demo: ") {
		t.Fatalf("second line %q", l)
	}
	// Keep draining so the process never blocks on stdout; remember the
	// progress lines.
	var progressMu sync.Mutex
	var progress []string
	go func() {
		for l := range lines {
			if strings.HasPrefix(l, "backfill: ") {
				progressMu.Lock()
				progress = append(progress, l)
				progressMu.Unlock()
			}
		}
	}()

	getJSON := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		if v != nil {
			_ = json.NewDecoder(resp.Body).Decode(v)
		}
		return resp.StatusCode
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Records int64
			Repos   map[string]int64
		}
		getJSON("/stats", &st)
		if st.Records > 0 && st.Repos["synced"] == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no records indexed; stats %+v; stderr:\n%s", st, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var page struct {
		Cursor  string
		Records []struct{ URI, CID string }
	}
	if code := getJSON("/xrpc/com.atproto.repo.listRecords?repo=alice.test&collection=app.bsky.feed.post&limit=5", &page); code != 200 {
		t.Fatalf("listRecords: %d", code)
	}
	if len(page.Records) != 5 || page.Cursor == "" || !strings.HasPrefix(page.Records[0].URI, "at://did:plc:") {
		t.Fatalf("listRecords page %+v", page)
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "repos done") {
		t.Fatalf("status page: %d %.300s", resp.StatusCode, body)
	}

	// Progress lines while backfilling (every 2 s in the demo), ending with
	// one that says every repo is done.
	done := regexp.MustCompile(`^backfill: 3 of 3 repos done; \d+ records stored, following the firehose$`)
	for deadline := time.Now().Add(15 * time.Second); ; {
		progressMu.Lock()
		seen := slices.ContainsFunc(progress, done.MatchString)
		lines := slices.Clone(progress)
		progressMu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress line saying the backfill is done; progress lines: %q", lines)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var before struct{ Records, NewestEvent int64 }
	getJSON("/stats", &before)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGINT: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cistern did not stop within 30s of SIGINT")
	}
	// Nothing acknowledged before the signal is lost: the store reopens
	// with at least the events it had.
	ix, err := cistern.Open(cistern.Config{Path: filepath.Join(dir, "demo.db"), NoFirehose: true, NoCrawl: true})
	if err != nil {
		t.Fatalf("reopen the store: %v", err)
	}
	defer ix.Close()
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if int64(st.NewestEvent) < before.NewestEvent || st.Records == 0 {
		t.Fatalf("after shutdown: newest event %d, records %d; before: %+v", st.NewestEvent, st.Records, before)
	}
}
