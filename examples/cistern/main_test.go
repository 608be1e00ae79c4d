package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
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
	"github.com/cistern-dev/cistern/httpapi"
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
		{"flag wins over environment", []string{"-listen", "127.0.0.1:1"}, map[string]string{"CISTERN_LISTEN": "127.0.0.1:2"}, func(c *config) bool {
			return c.Listen == "127.0.0.1:1"
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
		{"localhost and ::1 are loopback", []string{"-listen", "[::1]:1"}, map[string]string{"CISTERN_LISTEN": "localhost:2"}, func(c *config) bool {
			return c.Listen == "[::1]:1"
		}, ""},
		{"every interface without a token", []string{"-listen", ":2470"}, nil, nil, "not a loopback address"},
		{"a public address without a token", []string{"-listen", "192.0.2.1:2470"}, nil, nil, "-admin-token"},
		{"a host name without a token", nil, map[string]string{"CISTERN_LISTEN": "cistern.example:2470"}, nil, "not a loopback address"},
		{"every interface with a token", []string{"-listen", ":2470", "-admin-token", "t"}, nil, func(c *config) bool {
			return c.Listen == ":2470" && c.AdminToken == "t"
		}, ""},
		{"every interface with a token file", []string{"-listen", "0.0.0.0:2470"}, map[string]string{"CISTERN_ADMIN_TOKEN_FILE": "/etc/cistern/token"}, func(c *config) bool {
			return c.AdminTokenFile == "/etc/cistern/token"
		}, ""},
		{"connection limits by default", nil, nil, func(c *config) bool {
			return c.ReadTimeout == httpapi.DefaultReadTimeout && c.IdleTimeout == httpapi.DefaultIdleTimeout &&
				c.MaxConns == httpapi.DefaultMaxConns && c.MaxStreams == httpapi.DefaultMaxStreams
		}, ""},
		{"connection limits", []string{"-read-timeout", "5s", "-idle-timeout", "1m", "-max-conns", "100", "-max-streams", "50"}, nil, func(c *config) bool {
			return c.ReadTimeout == 5*time.Second && c.IdleTimeout == time.Minute && c.MaxConns == 100 && c.MaxStreams == 50
		}, ""},
		{"streams fill every connection", []string{"-max-conns", "100", "-max-streams", "100"}, nil, nil, "below -max-conns"},
		{"no read timeout", []string{"-read-timeout", "0s"}, nil, nil, "must be positive"},
		{"no connections", []string{"-max-conns", "0"}, nil, nil, "at least 1"},
		{"handles verified by default", nil, nil, func(c *config) bool { return !c.SkipHandleVerification }, ""},
		{"skip handle verification", nil, map[string]string{"CISTERN_SKIP_HANDLE_VERIFICATION": "true"}, func(c *config) bool {
			return c.SkipHandleVerification
		}, ""},
		{"several relays", []string{"-relay", "wss://relay1.example, https://pds.example ,"}, nil, func(c *config) bool {
			return slices.Equal(c.relays(), []string{"wss://relay1.example", "https://pds.example"})
		}, ""},
		{"a relay that is not a URL", []string{"-relay", "wss://relay1.example,relay2"}, nil, nil, `"relay2" is not a ws, wss, http or https URL`},
		{"no relay", []string{"-relay", " , "}, nil, nil, "no firehose source"},
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
	// Then where the management token is: generated beside the store.
	tokenFile := filepath.Join(dir, "demo.db.admin-token")
	if l := next("token line"); !strings.HasPrefix(l, "cistern: management token generated in "+tokenFile+" (mode 0600)") {
		t.Fatalf("second line %q", l)
	}
	if l := next("demo help"); !strings.HasPrefix(l, "demo: ") {
		t.Fatalf("third line %q", l)
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
	if resp.StatusCode != 200 || !strings.Contains(string(body), "<title>cistern status</title>") {
		t.Fatalf("status page: %d %.300s", resp.StatusCode, body)
	}
	var report struct {
		Backfill struct{ Done, Total int64 }
		History  struct{ Samples []struct{} }
	}
	if code := getJSON("/status.json", &report); code != 200 || report.Backfill.Done != 3 || report.Backfill.Total != 3 {
		t.Fatalf("status.json: %d %+v", code, report)
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

	// A loopback client that can read the token file can change things;
	// without the token, nothing changes.
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	aliceDID := strings.Split(strings.TrimPrefix(page.Records[0].URI, "at://"), "/")[0]
	resync := func(token string) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/repos/resync", strings.NewReader(`{"dids":["`+aliceDID+`"]}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := resync(""); code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Fatalf("POST /repos/resync without the token: %d", code)
	}
	if code := resync(strings.TrimSpace(string(tok))); code != http.StatusOK {
		t.Fatalf("POST /repos/resync with the token from %s: %d", tokenFile, code)
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

// The management token: generated once with mode 0600 beside the store,
// read back on the next start, refused when others can read it; an
// explicit -admin-token wins and writes nothing.
func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "c.db")
	c := &config{DB: db}
	first, err := loadAdminToken(c, db)
	if err != nil {
		t.Fatal(err)
	}
	if !first.generated || first.file != db+".admin-token" || len(first.value) != 64 {
		t.Fatalf("first start: %+v", first)
	}
	fi, err := os.Stat(first.file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %04o, want 0600", fi.Mode().Perm())
	}
	again, err := loadAdminToken(c, db)
	if err != nil {
		t.Fatal(err)
	}
	if again.generated || again.value != first.value {
		t.Fatalf("second start: %+v, first %+v", again, first)
	}
	if err := os.Chmod(first.file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAdminToken(c, db); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable token file: %v", err)
	}

	own := filepath.Join(dir, "own-token")
	if err := os.WriteFile(own, []byte("  mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := loadAdminToken(&config{DB: db, AdminTokenFile: own}, db); err != nil || tok.value != "mine" || tok.generated {
		t.Fatalf("-admin-token-file: %+v %v", tok, err)
	}
	if err := os.WriteFile(own, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAdminToken(&config{DB: db, AdminTokenFile: own}, db); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token file: %v", err)
	}

	other := filepath.Join(dir, "other.db")
	if tok, err := loadAdminToken(&config{DB: other, AdminToken: "given"}, other); err != nil || tok.value != "given" || tok.file != "" {
		t.Fatalf("-admin-token: %+v %v", tok, err)
	}
	if _, err := os.Stat(other + ".admin-token"); !os.IsNotExist(err) {
		t.Fatalf("-admin-token wrote a file: %v", err)
	}
}

// The flags of the hardening reach the indexer's configuration.
func TestApplyHardening(t *testing.T) {
	c, err := parseFlags([]string{"-relay", "wss://a.example,wss://b.example", "-skip-handle-verification", "-host-authority"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var icfg cistern.Config
	c.applyHardening(&icfg)
	if !icfg.SkipHandleVerification || !icfg.HostAuthority || icfg.RelayURL != "wss://a.example" || !slices.Equal(icfg.Sources, []string{"wss://a.example", "wss://b.example"}) {
		t.Fatalf("config %+v", icfg)
	}
	c, _ = parseFlags(nil, func(string) string { return "" }, io.Discard)
	icfg = cistern.Config{RelayURL: c.Relay}
	c.applyHardening(&icfg)
	if icfg.SkipHandleVerification || icfg.HostAuthority || icfg.Sources != nil || icfg.RelayURL != "wss://bsky.network" {
		t.Fatalf("defaults %+v", icfg)
	}
}
