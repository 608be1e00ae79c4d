package testnet

import (
	"bytes"
	"context"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

func TestAccountCommitsAppearOnFirehoseAndVerify(t *testing.T) {
	n := New(t)
	c := subscribe(t, n, -1)
	alice := n.Account(t, "alice.test", Records("app.bsky.feed.post", 250))

	fs := readFrames(t, c, 5)
	wantTypes := []string{"#identity", "#account", "#sync", "#commit", "#commit"}
	for i, f := range fs {
		if f.Type != wantTypes[i] {
			t.Fatalf("frame %d: type %s, want %s", i, f.Type, wantTypes[i])
		}
		if f.Seq != int64(i+1) {
			t.Fatalf("frame %d: seq %d", i, f.Seq)
		}
	}
	if h := fs[0].Value.(*comatproto.SyncSubscribeRepos_Identity).Handle; h == nil || *h != "alice.test" {
		t.Fatalf("identity handle %v", h)
	}
	if acc := fs[1].Value.(*comatproto.SyncSubscribeRepos_Account); !acc.Active || acc.Did != alice.DID().String() {
		t.Fatalf("account frame %+v", acc)
	}
	c1 := fs[3].Value.(*comatproto.SyncSubscribeRepos_Commit)
	c2 := fs[4].Value.(*comatproto.SyncSubscribeRepos_Commit)
	if len(c1.Ops) != 200 || len(c2.Ops) != 50 {
		t.Fatalf("ops %d, %d", len(c1.Ops), len(c2.Ops))
	}
	verifyCommitFrame(t, alice, c1)
	r2 := verifyCommitFrame(t, alice, c2)
	if c2.Since == nil || *c2.Since != c1.Rev {
		t.Fatalf("since %v, want %s", c2.Since, c1.Rev)
	}
	root, _ := r2.MST.RootCID()
	if *root != alice.DataCID() || c2.Rev != alice.Rev() {
		t.Fatalf("last commit data %s rev %s; account %s %s", root, c2.Rev, alice.DataCID(), alice.Rev())
	}

	// Update, delete and create in one commit.
	recs := alice.Records()
	if len(recs) != 250 {
		t.Fatalf("records %d", len(recs))
	}
	cm, err := alice.Apply(
		Update(recs[3].Collection, recs[3].RKey, Post("app.bsky.feed.post", "edited")),
		Delete(recs[7].Collection, recs[7].RKey),
		Create("app.bsky.feed.like", "", Post("app.bsky.feed.like", "like")),
	)
	mustNoErr(t, err)
	f := readFrame(t, c)
	m := f.Value.(*comatproto.SyncSubscribeRepos_Commit)
	if f.Seq != cm.Seq || m.Rev != cm.Rev {
		t.Fatalf("frame seq %d rev %s, commit %d %s", f.Seq, m.Rev, cm.Seq, cm.Rev)
	}
	if m.PrevData == nil || cid.Cid(*m.PrevData) != *root {
		t.Fatalf("prevData %v, want %s", m.PrevData, root)
	}
	if m.Ops[0].Prev == nil || cid.Cid(*m.Ops[0].Prev) != recs[3].CID || cid.Cid(*m.Ops[1].Prev) != recs[7].CID || m.Ops[1].Cid != nil {
		t.Fatalf("op prevs wrong: %+v %+v", m.Ops[0], m.Ops[1])
	}
	verifyCommitFrame(t, alice, m)

	// getRepo serves the new state.
	code, _, car := get(t, n.PDSURL()+"/xrpc/com.atproto.sync.getRepo?did="+alice.DID().String())
	if code != 200 {
		t.Fatalf("getRepo %d", code)
	}
	commit, r, err := repo.LoadRepoFromCAR(context.Background(), bytes.NewReader(car))
	mustNoErr(t, err)
	mustNoErr(t, commit.VerifySignature(alice.PublicKey()))
	if commit.Rev != cm.Rev || commit.Data != cm.Data {
		t.Fatalf("getRepo commit %s %s, want %s %s", commit.Rev, commit.Data, cm.Rev, cm.Data)
	}
	got := map[string]string{}
	mustNoErr(t, r.MST.Walk(func(k []byte, v cid.Cid) error { got[string(k)] = v.String(); return nil }))
	want := alice.Records()
	if len(got) != len(want) || len(want) != 250 {
		t.Fatalf("getRepo has %d records, account %d", len(got), len(want))
	}
	for _, rec := range want {
		if got[rec.Path()] != rec.CID.String() {
			t.Fatalf("record %s: %s != %s", rec.Path(), got[rec.Path()], rec.CID)
		}
	}
}

func TestDirectoryResolvesAccounts(t *testing.T) {
	n := New(t, WithHosts(2))
	a := n.Account(t, "alice.test")
	b, err := n.Host(1).CreateAccount("bob.test")
	mustNoErr(t, err)
	dir := n.Directory()
	for _, acc := range []*Account{a, b} {
		id, err := dir.LookupDID(context.Background(), acc.DID())
		mustNoErr(t, err)
		if id.PDSEndpoint() != acc.Host().URL() {
			t.Fatalf("pds %s, want %s", id.PDSEndpoint(), acc.Host().URL())
		}
		if h, err := id.DeclaredHandle(); err != nil || h != acc.Handle() {
			t.Fatalf("declared handle %s, %v", h, err)
		}
		pk, err := id.PublicKey()
		mustNoErr(t, err)
		if !pk.Equal(acc.PublicKey()) {
			t.Fatal("key mismatch")
		}
	}
	if _, err := dir.LookupDID(context.Background(), syntax.DID("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")); err == nil {
		t.Fatal("unknown DID resolved")
	}
}
