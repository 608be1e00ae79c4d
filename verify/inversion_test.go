package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
)

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
	raw, err := os.ReadFile("../testnet/testdata/commit-proof-fixtures.json")
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
