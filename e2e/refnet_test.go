package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// envVar enables the suite.
const envVar = "CISTERN_E2E"

// readyTimeout bounds refnet's start (setup.sh is expected to have run;
// if it has not, it installs first, which takes minutes).
const readyTimeout = 5 * time.Minute

// refnetDir is ../shared/refnet relative to the repository root.
func refnetDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "shared", "refnet")
}

// network is one running refnet.
type network struct {
	PLC, PDS, Control string

	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan struct{}
}

var (
	sharedOnce sync.Once
	sharedNet  *network
	sharedErr  error
)

// refnet returns the refnet shared by the package's tests, starting it on
// first use. It skips the test when the suite is not enabled or refnet is
// not present, and fails it when refnet does not start.
func refnet(t *testing.T) *network {
	t.Helper()
	if os.Getenv(envVar) != "1" {
		t.Skipf("end-to-end test against the reference network: set %s=1 to run (needs %s)", envVar, refnetDir())
	}
	if _, err := os.Stat(filepath.Join(refnetDir(), "run.sh")); err != nil {
		t.Skipf("end-to-end test: refnet not found at %s (%v)", refnetDir(), err)
	}
	sharedOnce.Do(func() { sharedNet, sharedErr = startNetwork() })
	if sharedErr != nil {
		t.Fatalf("start refnet: %v", sharedErr)
	}
	return sharedNet
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedNet != nil {
		if err := sharedNet.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop refnet:", err)
		}
		if code != 0 {
			fmt.Fprintf(os.Stderr, "--- refnet output (last 4 KiB) ---\n%s\n", sharedNet.logs.tail(4096))
		}
	}
	os.Exit(code)
}

// freePorts returns n distinct free TCP ports on loopback.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startNetwork runs refnet on free ports and waits for its READY line.
func startNetwork() (*network, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(refnetDir(), "run.sh"),
		fmt.Sprintf("--plc-port=%d", ports[0]),
		fmt.Sprintf("--pds-port=%d", ports[1]),
		fmt.Sprintf("--control-port=%d", ports[2]))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // stopped as a group
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	n := &network{cmd: cmd, logs: logs, done: make(chan struct{})}
	ready := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			if rest, ok := strings.CutPrefix(line, "READY "); ok {
				select {
				case ready <- rest:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned // Wait closes stdout: read it all first
		cmd.Wait()
		close(n.done)
	}()
	select {
	case line := <-ready:
		var urls struct{ PLC, PDS, Control string }
		if err := json.Unmarshal([]byte(line), &urls); err != nil {
			n.stop()
			return nil, fmt.Errorf("refnet READY line %q: %w", line, err)
		}
		n.PLC, n.PDS, n.Control = urls.PLC, urls.PDS, urls.Control
		return n, nil
	case <-n.done:
		return nil, fmt.Errorf("refnet exited before READY (%v):\n%s", cmd.ProcessState, logs.tail(4096))
	case <-time.After(readyTimeout):
		n.stop()
		return nil, fmt.Errorf("refnet not READY after %s:\n%s", readyTimeout, logs.tail(4096))
	}
}

// stop sends SIGTERM to refnet's process group, and SIGKILL if it is still
// there after 15 s.
func (n *network) stop() error {
	pgid := n.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	select {
	case <-n.done:
		return nil
	case <-time.After(15 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-n.done
		return errors.New("refnet did not stop on SIGTERM; killed")
	}
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// The control API.

// account is a refnet account.
type account struct {
	DID    string `json:"did"`
	Handle string `json:"handle"`
}

// commitRef is the commit a write made.
type commitRef struct {
	CID string `json:"cid"`
	Rev string `json:"rev"`
}

// writeResult is what createRecord, putRecord and applyWrites answer.
type writeResult struct {
	URI    string    `json:"uri"`
	CID    string    `json:"cid"`
	Commit commitRef `json:"commit"`
}

var controlClient = &http.Client{Timeout: 60 * time.Second}

// control calls the control API: POST path with body (or GET when body is
// nil) and decodes the answer into out (if not nil).
func (n *network) control(ctx context.Context, path string, body, out any) error {
	method, rd := http.MethodGet, io.Reader(nil)
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		method, rd = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.Control+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("content-type", "application/json")
	resp, err := controlClient.Do(req)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("control %s: HTTP %d: %s", path, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// must calls the control API and fails the test on error.
func (n *network) must(t testing.TB, path string, body, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.control(ctx, path, body, out); err != nil {
		t.Fatal(err)
	}
}

var handleSeq atomic.Int64

// newHandle returns a fresh handle: the reference PDS wants the part before
// .test to be 3 to 18 characters.
func newHandle(prefix string) string {
	if len(prefix) > 6 {
		prefix = prefix[:6]
	}
	s := fmt.Sprintf("%s%x%x", prefix, time.Now().UnixNano()%(1<<32), handleSeq.Add(1))
	if len(s) > 18 {
		s = s[len(s)-18:]
	}
	return strings.ToLower(s) + ".test"
}

// createAccount makes a new account.
func (n *network) createAccount(t testing.TB, prefix string) account {
	t.Helper()
	var a account
	n.must(t, "/accounts", map[string]any{"handle": newHandle(prefix)}, &a)
	return a
}

// record builds a record value of a collection.
func record(collection, text string) map[string]any {
	return map[string]any{"$type": collection, "text": text, "createdAt": time.Now().UTC().Format(time.RFC3339Nano)}
}

func (n *network) create(t testing.TB, did, collection, text string) writeResult {
	t.Helper()
	var out writeResult
	n.must(t, "/records", map[string]any{"did": did, "collection": collection, "record": record(collection, text)}, &out)
	return out
}

func (n *network) put(t testing.TB, did, collection, rkey, text string) writeResult {
	t.Helper()
	var out writeResult
	n.must(t, "/records/put", map[string]any{"did": did, "collection": collection, "rkey": rkey, "record": record(collection, text)}, &out)
	return out
}

func (n *network) del(t testing.TB, did, collection, rkey string) {
	t.Helper()
	n.must(t, "/records/delete", map[string]any{"did": did, "collection": collection, "rkey": rkey}, nil)
}

// Ops of applyWrites.
func opCreate(collection, rkey, text string) map[string]any {
	op := map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": collection, "value": record(collection, text)}
	if rkey != "" {
		op["rkey"] = rkey
	}
	return op
}

func opUpdate(collection, rkey, text string) map[string]any {
	return map[string]any{"$type": "com.atproto.repo.applyWrites#update", "collection": collection, "rkey": rkey, "value": record(collection, text)}
}

func opDelete(collection, rkey string) map[string]any {
	return map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": collection, "rkey": rkey}
}

// applyWrites writes several ops in one commit and returns the commit.
func (n *network) applyWrites(t testing.TB, did string, ops ...map[string]any) commitRef {
	t.Helper()
	var out struct {
		Commit commitRef `json:"commit"`
	}
	n.must(t, "/writes", map[string]any{"did": did, "writes": ops}, &out)
	return out.Commit
}

// rkeyOf returns the record key of an at:// URI.
func rkeyOf(uri string) string {
	return uri[strings.LastIndexByte(uri, '/')+1:]
}
