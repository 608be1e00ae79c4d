package cistern

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

const testPost = "app.bsky.feed.post"

// innerRecord returns a record of a that shares its MST node with both of
// its neighbours, below the root: deleting it leaves that node in the new
// tree, and re-inserting it (what inverting the delete does) needs it.
func innerRecord(t *testing.T, a *testnet.Account) testnet.Record {
	t.Helper()
	recs := a.Records()
	height := func(r testnet.Record) int { return mst.HeightForKey([]byte(r.Path())) }
	top := 0
	for _, r := range recs {
		top = max(top, height(r))
	}
	if top == 0 {
		t.Fatal("the tree has one layer: no node below the root")
	}
	for i := 1; i+1 < len(recs); i++ {
		if height(recs[i-1]) == 0 && height(recs[i]) == 0 && height(recs[i+1]) == 0 {
			return recs[i]
		}
	}
	t.Fatal("no record shares a bottom-layer node with both neighbours")
	return testnet.Record{}
}

// TestLive_RejectsCommitsOnlyVerificationCatches feeds #commit frames that
// are wrong in ways only one check sees (prevData is right in all of them)
// and checks that each is rejected for its reason, counted, and that the
// repo is resynced to the PDS's state.
func TestLive_RejectsCommitsOnlyVerificationCatches(t *testing.T) {
	creates := func(n int) func(*testnet.Account) []testnet.Op {
		return func(*testnet.Account) []testnet.Op {
			ops := make([]testnet.Op, n)
			for i := range ops {
				ops[i] = testnet.Create(testPost, "", testnet.Post(testPost, "rejected"))
			}
			return ops
		}
	}
	cases := []struct {
		name   string
		fault  testnet.Fault
		ops    func(*testnet.Account) []testnet.Op
		reason RejectReason
	}{
		// The inversion: the ops left do not lead back to prevData.
		{"an op left out", testnet.FaultMissingOp, creates(2), RejectBrokenChain},
		// An op's CID (with its value in the CAR) that the tree does not hold.
		{"an op's CID not the tree's", testnet.FaultWrongOpCID, creates(1), RejectBadOps},
		// The inversion cannot re-insert the deleted key without its node.
		{"an MST node left out", testnet.FaultMissingBlock, func(a *testnet.Account) []testnet.Op {
			return []testnet.Op{testnet.Delete(testPost, innerRecord(t, a).RKey)}
		}, RejectBrokenChain},
		{"signed commit of another DID", testnet.FaultWrongCommitDID, creates(1), RejectCIDMismatch},
		{"signed commit of another rev", testnet.FaultWrongCommitRev, creates(1), RejectCIDMismatch},
		{"more than 200 ops", testnet.FaultNone, creates(MaxCommitOps + 1), RejectTooLarge},
		{"200 ops", testnet.FaultNone, creates(MaxCommitOps), ""},
	}
	net := testnet.New(t)
	accts := make([]*testnet.Account, len(cases))
	var dids []string
	for i := range cases {
		accts[i] = net.Account(t, fmt.Sprintf("reject%d.test", i))
		// Fixed rkeys: the tree's shape is the same every run.
		seed := make([]testnet.Op, 100)
		for j := range seed {
			seed[j] = testnet.Create(testPost, fmt.Sprintf("r%03d", j), testnet.Post(testPost, "seed"))
		}
		if _, err := accts[i].Apply(seed...); err != nil {
			t.Fatal(err)
		}
		dids = append(dids, accts[i].DID().String())
	}
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: dids}))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, did := accts[i], dids[i]
			if err := ix.WaitSynced(ctx, did); err != nil {
				t.Fatal(err)
			}
			before := rejectedAs(t, ctx, ix, tc.reason)
			c, err := a.ApplyFaulty(tc.fault, tc.ops(a)...)
			if err != nil {
				t.Fatal(err)
			}
			err = ix.handleMessage(ctx, "test", frameAt(t, net, c.Seq))
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("handleMessage = %v; want the commit applied", err)
				}
				unlock := ix.lock(did) // waits for the pipelined write
				r, err := ix.repo(ctx, did)
				unlock()
				if err != nil || r.Rev != c.Rev {
					t.Fatalf("repo %+v (%v), want it at rev %s", r, err, c.Rev)
				}
				return
			}
			assertRejected(t, ctx, ix, a, err, tc.reason, before)
		})
	}
}

// TestHandleSync_RejectsBadCommits: a #sync whose signed commit does not
// verify, or names another DID or rev than the frame, is rejected and
// counted, and the repo resynced.
func TestHandleSync_RejectsBadCommits(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "badsync.test", testnet.Records(testPost, 3))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fault  testnet.Fault
		reason RejectReason
	}{
		{testnet.FaultBadSignature, RejectBadSignature},
		{testnet.FaultWrongCommitDID, RejectCIDMismatch},
		{testnet.FaultWrongCommitRev, RejectCIDMismatch},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			// The repo moves on unseen, so that the #sync is news.
			if _, err := a.CreateRecord(testPost, testnet.Post(testPost, "unseen")); err != nil {
				t.Fatal(err)
			}
			before := rejectedAs(t, ctx, ix, tc.reason)
			seq, err := a.EmitSyncFaulty(tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			err = ix.handleMessage(ctx, "test", frameAt(t, net, seq))
			assertRejected(t, ctx, ix, a, err, tc.reason, before)
		})
	}
}

// TestLive_KeyRotationResolvesOnce: after the account rotates its signing
// key (its #identity frame not seen), the first commit signed with the new
// key finds the cached key wrong, resolves the identity once and applies;
// the new key is saved, so the commits after it resolve nothing.
func TestLive_KeyRotationResolvesOnce(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "rotate.test", testnet.Records(testPost, 3))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateKey(); err != nil {
		t.Fatal(err)
	}
	msgs := commitFrames(t, net, a, 3, func(int) string { return "" })
	plc := net.PLCRequests()
	if err := ix.handleMessage(ctx, "test", msgs[0]); err != nil {
		t.Fatalf("first commit after the rotation: %v", err)
	}
	if n := net.PLCRequests() - plc; n != 1 {
		t.Fatalf("first commit after the rotation made %d PLC requests, want 1", n)
	}
	for _, m := range msgs[1:] {
		if err := ix.handleMessage(ctx, "test", m); err != nil {
			t.Fatalf("commit after the rotation: %v", err)
		}
	}
	if n := net.PLCRequests() - plc; n != 1 {
		t.Fatalf("three commits after the rotation made %d PLC requests, want 1: the new key was not kept", n)
	}
	unlock := ix.lock(did) // waits for the pipelined writes
	r, err := ix.repo(ctx, did)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	if r.Rev != a.Rev() || r.SigningKey != a.PublicKey().Multibase() {
		t.Fatalf("repo at %s with key %s; PDS at %s with key %s", r.Rev, r.SigningKey, a.Rev(), a.PublicKey().Multibase())
	}
	st, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for reason, n := range st.Rejected {
		if n != 0 {
			t.Errorf("%d commits rejected as %s", n, reason)
		}
	}
}

// memBlocks is a map block store for building MSTs in tests.
type memBlocks struct{ mapBlocks }

func (m memBlocks) Put(_ context.Context, b blocks.Block) error {
	m.mapBlocks[b.Cid()] = b.RawData()
	return nil
}

func (m memBlocks) PutMany(ctx context.Context, bs []blocks.Block) error {
	for _, b := range bs {
		_ = m.Put(ctx, b)
	}
	return nil
}

func (m memBlocks) Has(_ context.Context, c cid.Cid) (bool, error) {
	_, ok := m.mapBlocks[c]
	return ok, nil
}

func (m memBlocks) GetSize(_ context.Context, c cid.Cid) (int, error) {
	return len(m.mapBlocks[c]), nil
}

func (m memBlocks) DeleteBlock(_ context.Context, c cid.Cid) error {
	delete(m.mapBlocks, c)
	return nil
}

func (m memBlocks) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	return nil, errors.New("not supported")
}

func (m memBlocks) HashOnRead(bool) {}

// commitProofFixture is one case of the sync 1.1 interop commit proofs.
type commitProofFixture struct {
	Comment    string   `json:"comment"`
	LeafValue  string   `json:"leafValue"`
	Keys       []string `json:"keys"`
	Adds       []string `json:"adds"`
	Dels       []string `json:"dels"`
	RootBefore string   `json:"rootBeforeCommit"`
	RootAfter  string   `json:"rootAfterCommit"`
	InProof    []string `json:"blocksInProof"`
}

// TestCheckInversion_CommitProofFixtures runs cistern's sync 1.1 check
// over the interop commit-proof fixtures (testnet/testdata, CC0): a commit
// CAR of the signed commit and exactly the fixture's proof blocks must
// invert to the root before the commit; without the tree's root, with an
// op left out, with an op's CID changed or with another prevData, it must
// not. The fixtures' keys are not repo paths (no NSID collection) and
// the block of their leaf value is not given, so checkCommit's own checks
// of paths and values cannot run on them; the inversion it calls does.
func TestCheckInversion_CommitProofFixtures(t *testing.T) {
	raw, err := os.ReadFile("testnet/testdata/commit-proof-fixtures.json")
	if err != nil {
		t.Fatal(err)
	}
	var fixtures []commitProofFixture
	if err := json.Unmarshal(raw, &fixtures); err != nil {
		t.Fatal(err)
	}
	if len(fixtures) == 0 {
		t.Fatal("no fixtures")
	}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, f := range fixtures {
		t.Run(f.Comment, func(t *testing.T) {
			leaf, err := cid.Decode(f.LeafValue)
			if err != nil {
				t.Fatal(err)
			}
			// The trees, built as any implementation would, must be the
			// fixture's: then its proof blocks can be taken from ours.
			before, after, diff := fixtureTrees(t, f, leaf)
			if before.String() != f.RootBefore || after.String() != f.RootAfter {
				t.Fatalf("roots %s -> %s, fixture %s -> %s", before, after, f.RootBefore, f.RootAfter)
			}
			var proof []cid.Cid
			for _, s := range f.InProof {
				c, err := cid.Decode(s)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := diff.mapBlocks[c]; !ok {
					t.Fatalf("proof block %s is not a node the commit wrote", c)
				}
				proof = append(proof, c)
			}
			ops := make([]*comatproto.SyncSubscribeRepos_RepoOp, 0, len(f.Adds)+len(f.Dels))
			for _, k := range f.Adds {
				l := lexutil.LexLink(leaf)
				ops = append(ops, &comatproto.SyncSubscribeRepos_RepoOp{Action: "create", Path: k, Cid: &l})
			}
			for _, k := range f.Dels {
				l := lexutil.LexLink(leaf)
				ops = append(ops, &comatproto.SyncSubscribeRepos_RepoOp{Action: "delete", Path: k, Prev: &l})
			}
			commit := repo.Commit{DID: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", Version: repo.ATPROTO_REPO_VERSION,
				Data: after, Rev: syntax.NewTIDNow(0).String()}
			if err := commit.Sign(key); err != nil {
				t.Fatal(err)
			}
			check := func(ops []*comatproto.SyncSubscribeRepos_RepoOp, proof []cid.Cid, prevData cid.Cid) error {
				t.Helper()
				msg := &comatproto.SyncSubscribeRepos_Commit{Repo: commit.DID, Rev: commit.Rev, Ops: ops,
					Blocks: proofCAR(t, &commit, diff, proof)}
				cc, err := readCommitCAR(msg.Blocks)
				if err != nil {
					t.Fatal(err)
				}
				return checkInversion(ctx, cc, msg, prevData)
			}
			if err := check(ops, proof, before); err != nil {
				t.Fatalf("the fixture's proof: %v", err)
			}

			rejected := func(what string, err error) {
				t.Helper()
				var ce *CommitError
				if !errors.As(err, &ce) {
					t.Fatalf("%s: %v, want a rejection", what, err)
				}
			}
			// Not every block a proof must carry is read by indigo's
			// inversion (it needs no sibling it does not merge), but the
			// tree's root is.
			var noRoot []cid.Cid
			for _, c := range proof {
				if c != after {
					noRoot = append(noRoot, c)
				}
			}
			rejected("proof without the root", check(ops, noRoot, before))
			for i := range ops {
				less := append(append([]*comatproto.SyncSubscribeRepos_RepoOp(nil), ops[:i]...), ops[i+1:]...)
				rejected("without op "+ops[i].Path, check(less, proof, before))
			}
			other := lexutil.LexLink(before) // any CID the tree does not hold
			wrong := *ops[0]
			if wrong.Cid != nil {
				wrong.Cid = &other
			} else {
				wrong.Prev = &other
			}
			changed := append([]*comatproto.SyncSubscribeRepos_RepoOp{&wrong}, ops[1:]...)
			rejected("op "+wrong.Path+" with another CID", check(changed, proof, before))
			rejected("prevData the root after", check(ops, proof, after))
		})
	}
}

// fixtureTrees builds the fixture's tree before the commit, applies the
// commit's adds and deletes, and returns both roots and the MST nodes the
// commit wrote.
func fixtureTrees(t *testing.T, f commitProofFixture, leaf cid.Cid) (before, after cid.Cid, diff memBlocks) {
	t.Helper()
	ctx := context.Background()
	tree := mst.NewEmptyTree()
	for _, k := range f.Keys {
		if _, err := tree.Insert([]byte(k), leaf); err != nil {
			t.Fatal(err)
		}
	}
	root, err := tree.WriteDiffBlocks(ctx, memBlocks{mapBlocks{}}) // every node, and marks them written
	if err != nil {
		t.Fatal(err)
	}
	before = *root
	for _, k := range f.Adds {
		if _, err := tree.Insert([]byte(k), leaf); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range f.Dels {
		if _, err := tree.Remove([]byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	diff = memBlocks{mapBlocks{}}
	if root, err = tree.WriteDiffBlocks(ctx, diff); err != nil {
		t.Fatal(err)
	}
	return before, *root, diff
}

// proofCAR writes a commit CAR: the signed commit, then the blocks of
// nodes taken from bs.
func proofCAR(t *testing.T, commit *repo.Commit, bs memBlocks, nodes []cid.Cid) []byte {
	t.Helper()
	var cb bytes.Buffer
	if err := commit.MarshalCBOR(&cb); err != nil {
		t.Fatal(err)
	}
	root, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(cb.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{root}, Version: 1}, &out); err != nil {
		t.Fatal(err)
	}
	if err := carutil.LdWrite(&out, root.Bytes(), cb.Bytes()); err != nil {
		t.Fatal(err)
	}
	for _, c := range nodes {
		if err := carutil.LdWrite(&out, c.Bytes(), bs.mapBlocks[c]); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}
