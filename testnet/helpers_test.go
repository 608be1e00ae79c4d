package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
)

// frame is one decoded subscribeRepos frame.
type frame struct {
	Op    int64
	Type  string
	Err   string
	Msg   string
	Body  []byte
	Seq   int64
	Value any // *comatproto.SyncSubscribeRepos_{Commit,Sync,Identity,Account,Info}
}

func decodeFrame(t testing.TB, data []byte) frame {
	t.Helper()
	dec := cbor.NewDecoder(bytes.NewReader(data))
	var hdr struct {
		Op int64  `cbor:"op"`
		T  string `cbor:"t"`
	}
	if err := dec.Decode(&hdr); err != nil {
		t.Fatalf("frame header: %v", err)
	}
	body := data[dec.NumBytesRead():]
	f := frame{Op: hdr.Op, Type: hdr.T, Body: body}
	if hdr.Op == -1 {
		var e struct {
			Error   string `cbor:"error"`
			Message string `cbor:"message"`
		}
		if err := cbor.Unmarshal(body, &e); err != nil {
			t.Fatalf("error body: %v", err)
		}
		f.Err, f.Msg = e.Error, e.Message
		return f
	}
	r := bytes.NewReader(body)
	var err error
	switch hdr.T {
	case "#commit":
		m := new(comatproto.SyncSubscribeRepos_Commit)
		err = m.UnmarshalCBOR(r)
		f.Value, f.Seq = m, m.Seq
	case "#sync":
		m := new(comatproto.SyncSubscribeRepos_Sync)
		err = m.UnmarshalCBOR(r)
		f.Value, f.Seq = m, m.Seq
	case "#identity":
		m := new(comatproto.SyncSubscribeRepos_Identity)
		err = m.UnmarshalCBOR(r)
		f.Value, f.Seq = m, m.Seq
	case "#account":
		m := new(comatproto.SyncSubscribeRepos_Account)
		err = m.UnmarshalCBOR(r)
		f.Value, f.Seq = m, m.Seq
	case "#info":
		m := new(comatproto.SyncSubscribeRepos_Info)
		err = m.UnmarshalCBOR(r)
		f.Value = m
	default:
		t.Fatalf("unknown frame type %q", hdr.T)
	}
	if err != nil {
		t.Fatalf("%s body: %v", hdr.T, err)
	}
	return f
}

// subscribe dials the firehose; cursor < 0 means no cursor.
func subscribe(t testing.TB, n *Network, cursor int64) *websocket.Conn {
	t.Helper()
	u := n.FirehoseURL()
	if cursor >= 0 {
		u += "?cursor=" + strconv.FormatInt(cursor, 10)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial firehose: %v", err)
	}
	c.SetReadLimit(16 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func readFrame(t testing.TB, c *websocket.Conn) frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return decodeFrame(t, data)
}

func readFrames(t testing.TB, c *websocket.Conn, k int) []frame {
	t.Helper()
	out := make([]frame, k)
	for i := range out {
		out[i] = readFrame(t, c)
	}
	return out
}

// verifyCommitFrame checks a #commit frame as a careful indexer would.
func verifyCommitFrame(t testing.TB, a *Account, m *comatproto.SyncSubscribeRepos_Commit) *repo.Repo {
	t.Helper()
	ctx := context.Background()
	r, err := repo.VerifyCommitMessage(ctx, m)
	if err != nil {
		t.Fatalf("VerifyCommitMessage: %v", err)
	}
	commit, root, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks))
	if err != nil {
		t.Fatalf("LoadCommitFromCAR: %v", err)
	}
	if *root != cid.Cid(m.Commit) {
		t.Fatalf("frame commit %s != CAR root %s", cid.Cid(m.Commit), root)
	}
	if err := commit.VerifySignature(a.PublicKey()); err != nil {
		t.Fatalf("signature: %v", err)
	}
	return r
}

func get(t testing.TB, u string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", u, err)
	}
	return resp.StatusCode, resp.Header, b
}

func getJSON(t testing.TB, u string, v any) {
	t.Helper()
	code, _, b := get(t, u)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", u, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", u, err, b)
	}
}

func xrpcError(t testing.TB, u string) (int, string) {
	t.Helper()
	code, name, _ := xrpcErrorMessage(t, u)
	return code, name
}

// xrpcErrorMessage is xrpcError with the message.
func xrpcErrorMessage(t testing.TB, u string) (code int, name, message string) {
	t.Helper()
	code, _, b := get(t, u)
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("GET %s: not an XRPC error: %d %s", u, code, b)
	}
	return code, e.Error, e.Message
}

func mustNoErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = fmt.Sprint

func cidOf(l lexutil.LexLink) cid.Cid { return cid.Cid(l) }

func parseTID(s string) (syntax.TID, error) { return syntax.ParseTID(s) }

func syntaxRKey(s string) syntax.RecordKey { return syntax.RecordKey(s) }

func didOf(s string) syntax.DID { return syntax.DID(s) }
