// Package pgtest gives tests a PostgreSQL database to run against.
//
// When CISTERN_PG_URL is set (postgres://user:pass@host:port/db), tests use
// that server. Otherwise a throwaway server is started on a free loopback
// port from the PostgreSQL binaries installed on the machine (Debian's
// postgresql package puts them in /usr/lib/postgresql/N/bin; initdb and
// postgres in PATH are used too): initdb into a temporary directory, then
// postgres with fsync off (tests only: nothing here is durable; Start can
// keep the durable settings, for benchmarks). When the
// process runs as root the server runs as the "postgres" user, since
// initdb refuses root.
//
// One server is started per test binary, on first use, and each test gets
// a schema of its own on it (Schema). Call Main from TestMain so the server
// stops and its directory is removed when the tests end; the server also
// stops when the test process dies (it is killed with the process).
//
// When no server can be had, tests skip with a message saying why, or fail
// instead when CISTERN_REQUIRE_E2E=1 (as CI sets).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the variable holding the URL of an existing server to use
// instead of starting one.
const EnvURL = "CISTERN_PG_URL"

// ErrUnavailable is wrapped by Start when no PostgreSQL binaries are found.
var ErrUnavailable = errors.New("pgtest: PostgreSQL is not installed (install Debian's postgresql package: scripts/setup.sh does)")

// Server is a running throwaway PostgreSQL.
type Server struct {
	// URL connects to the server's "postgres" database as a superuser.
	URL string

	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// BinDir returns the directory holding initdb and postgres, preferring
// the newest /usr/lib/postgresql/N/bin, then PATH.
func BinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", ErrUnavailable
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// StartOptions configure Start. A nil *StartOptions gives the defaults.
type StartOptions struct {
	// Durable keeps PostgreSQL's durable settings (fsync, synchronous
	// commit, full page writes), for benchmarks that compare with stores
	// that fsync. Default false: off, for speed in tests.
	Durable bool
}

// Start initialises a data directory under a new temporary directory and
// starts a server on a free loopback port. Stop stops it and removes the
// directory.
func Start(ctx context.Context, opts *StartOptions) (*Server, error) {
	durable := opts != nil && opts.Durable
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cistern-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir, done: make(chan struct{}), log: filepath.Join(dir, "server.log")}
	cred, err := credential(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		err = s.run(ctx, bin, data, port, cred, durable)
		if err == nil {
			return s, nil
		}
		if attempt == 2 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// credential returns the user to run the server as: postgres when this
// process is root (initdb refuses root), nil (this user) otherwise. The
// directory is handed to that user.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs the postgres user (created by the postgresql package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run starts postgres on port and waits until it accepts connections.
func (s *Server) run(ctx context.Context, bin, data string, port int, cred *syscall.Credential, durable bool) error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logf.Close()
	if cred != nil {
		os.Chown(s.log, int(cred.Uid), int(cred.Gid))
	}
	// Not CommandContext: the server outlives Start's context.
	args := []string{"-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + s.dir, "-c", "max_connections=200"}
	if !durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("pgtest: postgres exited on start:\n%s", b)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, s.URL)
		cancel()
		if err == nil {
			conn.Close(ctx)
			s.cmd, s.done = cmd, done
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("pgtest: postgres did not accept connections: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts the server down (fast mode) and removes its directory.
func (s *Server) Stop() error {
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	return os.RemoveAll(s.dir)
}

var shared struct {
	sync.Mutex
	srv     *Server
	url     string
	err     error
	started bool
}

// Main runs the tests of a package and then stops the server they shared.
// Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.srv != nil {
		shared.srv.Stop()
		shared.srv = nil
	}
	return code
}

// URL returns the URL of the test binary's shared server (CISTERN_PG_URL,
// or a throwaway server started on first use), or skips t when there is
// none (fails it when CISTERN_REQUIRE_E2E=1).
func URL(t testing.TB) string {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.started {
		shared.started = true
		if u := os.Getenv(EnvURL); u != "" {
			shared.url = u
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			shared.srv, shared.err = Start(ctx, nil)
			cancel()
			if shared.err == nil {
				shared.url = shared.srv.URL
			}
		}
	}
	if shared.err != nil {
		if os.Getenv("CISTERN_REQUIRE_E2E") == "1" {
			t.Fatalf("PostgreSQL needed (CISTERN_REQUIRE_E2E=1): %v", shared.err)
		}
		t.Skipf("skipping: no PostgreSQL: %v (set %s, or install the postgresql package)", shared.err, EnvURL)
	}
	return shared.url
}

// Schema creates a schema of its own for t on the shared server and
// returns a URL whose connections use it (search_path). The schema is
// dropped when t ends.
func Schema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	var b [6]byte
	rand.Read(b[:])
	name := "t_" + sanitize(t.Name()) + "_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect %s: %v", base, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE")
	})
	return WithSchema(base, name)
}

// WithSchema returns rawURL with its connections' search_path set to
// schema.
func WithSchema(rawURL, schema string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// sanitize keeps a test name usable in a schema name (at most 63 bytes in
// all).
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 40 {
		s = s[len(s)-40:]
	}
	return s
}
