package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestBinaryServesNetwork(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "testnet")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "-listen", addr, "-accounts", "3", "-records", "20", "-collections", "app.bsky.feed.post,app.bsky.feed.like", "-rate", "50", "-seed", "7")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	var urls struct{ PLC, PDS, Relay string }
	select {
	case line := <-lines:
		js, ok := strings.CutPrefix(line, "READY ")
		if !ok {
			t.Fatalf("first line %q", line)
		}
		if err := json.Unmarshal([]byte(js), &urls); err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no READY line; stderr:\n%s", stderr.String())
	}
	if urls.PDS != "http://"+addr || urls.Relay != urls.PDS || urls.PLC != urls.PDS {
		t.Fatalf("urls %+v", urls)
	}

	var list struct {
		Repos []struct{ DID string } `json:"repos"`
	}
	getJSON(t, urls.Relay+"/xrpc/com.atproto.sync.listRepos", &list)
	if len(list.Repos) != 3 {
		t.Fatalf("listRepos: %d repos", len(list.Repos))
	}
	resp, err := http.Get(urls.PDS + "/xrpc/com.atproto.sync.getRepo?did=" + list.Repos[0].DID)
	if err != nil {
		t.Fatal(err)
	}
	car, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, r, err := repo.LoadRepoFromCAR(context.Background(), bytes.NewReader(car))
	if err != nil {
		t.Fatalf("getRepo CAR: %v", err)
	}
	if _, err := r.GetRecordCID(context.Background(), "app.bsky.feed.like", "2222222222222"); err == nil {
		t.Fatal("unexpected record")
	}
	var doc struct {
		ID string `json:"id"`
	}
	getJSON(t, urls.PLC+"/"+list.Repos[0].DID, &doc)
	if doc.ID != list.Repos[0].DID {
		t.Fatalf("PLC doc id %q", doc.ID)
	}

	// The -rate load shows up on the firehose as #commit frames.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(urls.Relay, "http")+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for i := 0; i < 3; i++ {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dec := cbor.NewDecoder(bytes.NewReader(data))
		var hdr struct {
			Op int64  `cbor:"op"`
			T  string `cbor:"t"`
		}
		if err := dec.Decode(&hdr); err != nil || hdr.Op != 1 || hdr.T != "#commit" {
			t.Fatalf("header %+v %v", hdr, err)
		}
		var m comatproto.SyncSubscribeRepos_Commit
		if err := m.UnmarshalCBOR(bytes.NewReader(data[dec.NumBytesRead():])); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.VerifyCommitMessage(ctx, &m); err != nil {
			t.Fatalf("commit frame: %v", err)
		}
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
