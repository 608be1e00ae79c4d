package testnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"testing"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
)

// readBlocks decodes a getBlocks answer: a CAR without roots.
func readBlocks(t *testing.T, body []byte) map[cid.Cid][]byte {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(body))
	h, err := car.ReadHeader(br)
	if err != nil || h.Version != 1 || len(h.Roots) != 0 {
		t.Fatalf("CAR header %+v, %v: want version 1 without roots", h, err)
	}
	out := map[cid.Cid][]byte{}
	for {
		c, data, err := carutil.ReadNode(br)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[c] = data
	}
}

func TestGetBlocks(t *testing.T) {
	n := New(t)
	a := n.Account(t, "alice.test", Records("app.bsky.feed.post", 5))
	h := a.Host()
	recs := a.Records()
	blocksURL := func(cids ...cid.Cid) string {
		q := url.Values{"did": {a.DID().String()}}
		for _, c := range cids {
			q.Add("cids", c.String())
		}
		return h.URL() + "/xrpc/com.atproto.sync.getBlocks?" + q.Encode()
	}
	asked := []cid.Cid{a.CommitCID(), a.DataCID(), recs[0].CID, recs[3].CID}

	code, hdr, body := get(t, blocksURL(asked...))
	if code != 200 || hdr.Get("Content-Type") != "application/vnd.ipld.car" {
		t.Fatalf("getBlocks: %d %s", code, body)
	}
	got := readBlocks(t, body)
	if len(got) != len(asked) || !bytes.Equal(got[recs[3].CID], recs[3].Value) {
		t.Fatalf("getBlocks returned %d blocks, want %d with the records' values", len(got), len(asked))
	}
	for c, data := range got {
		if sum, _ := c.Prefix().Sum(data); !sum.Equals(c) {
			t.Fatalf("block %s does not hash to its CID", c)
		}
	}
	if fmt.Sprint(h.ServedBlocks()) != fmt.Sprint(asked) {
		t.Fatalf("ServedBlocks = %v, want %v", h.ServedBlocks(), asked)
	}

	// A block the repo lacks fails the whole request, as at the reference PDS.
	absent, _ := cid.NewPrefixV1(cid.DagCBOR, 0x12).Sum([]byte("absent"))
	if code, name, msg := xrpcErrorMessage(t, blocksURL(recs[0].CID, absent)); code != 400 || name != "InvalidRequest" ||
		msg != "Could not find cids: "+absent.String() {
		t.Fatalf("absent block: %d %s %q", code, name, msg)
	}
	if code, name := xrpcError(t, blocksURL()+"&cids=nope"); code != 400 || name != "InvalidRequest" {
		t.Fatalf("invalid CID: %d %s", code, name)
	}

	// Faults.
	h.OmitBlock(recs[0].CID)
	h.CorruptBlock(recs[3].CID)
	_, _, body = get(t, blocksURL(asked...))
	got = readBlocks(t, body)
	if _, ok := got[recs[0].CID]; ok || len(got) != len(asked)-1 {
		t.Fatalf("omitted block served (%d blocks)", len(got))
	}
	if sum, _ := recs[3].CID.Prefix().Sum(got[recs[3].CID]); sum.Equals(recs[3].CID) {
		t.Fatal("corrupted block still hashes to its CID")
	}
	h.LoseBlock(recs[1].CID)
	if code, name, msg := xrpcErrorMessage(t, blocksURL(recs[1].CID, recs[2].CID)); code != 400 || name != "InvalidRequest" ||
		msg != "Could not find cids: "+recs[1].CID.String() {
		t.Fatalf("lost block: %d %s %q", code, name, msg)
	}
	h.DisableGetBlocks(true)
	if code, name := xrpcError(t, blocksURL(asked...)); code != 501 || name != "MethodNotImplemented" {
		t.Fatalf("disabled getBlocks: %d %s", code, name)
	}
	h.ClearFaults()
	h.ResetRequests()
	if _, _, body = get(t, blocksURL(asked...)); len(readBlocks(t, body)) != len(asked) || len(h.ServedBlocks()) != len(asked) {
		t.Fatal("faults not cleared")
	}
}
