// Package verify holds the pure checks of a live commit and of a #sync
// message, and the reasons a commit is rejected.
//
// It does no I/O of its own: the caller hands it the firehose message, the
// data CID the repo is stored at and a KeyFunc that finds the signing key
// (from a cache, or resolved afresh once after a failed check). Both the
// live path (internal/ingest) and backfill use it, so a signature is
// checked, and a key rotation followed, in one way only. A failed check is
// a *CommitError naming its RejectReason; what to do about it (count it,
// resync the repo) is the caller's business.
package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car"
)

// mapBlocks is a block source over the blocks of one commit CAR.
type mapBlocks map[cid.Cid][]byte

func (m mapBlocks) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	data, ok := m[c]
	if !ok {
		// ipld.ErrNotFound lets mst.LoadTreeFromStore build a partial
		// tree: a commit CAR holds only the nodes the commit touched.
		return nil, ipld.ErrNotFound{Cid: c}
	}
	return blocks.NewBlockWithCid(data, c)
}

// commitCAR is a commit message's CAR, read once: its root, its blocks (each
// checked against its CID by the CAR reader) and the signed commit.
type commitCAR struct {
	root   cid.Cid
	blocks mapBlocks
	commit *repo.Commit
}

func readCommitCAR(data []byte) (*commitCAR, error) {
	cr, err := car.NewCarReader(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return nil, fmt.Errorf("read CAR header: %w", err)
	}
	if cr.Header.Version != 1 || len(cr.Header.Roots) == 0 {
		return nil, errors.New("CAR has no root or is not version 1")
	}
	out := &commitCAR{root: cr.Header.Roots[0], blocks: make(mapBlocks)}
	for {
		blk, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read CAR block: %w", err)
		}
		out.blocks[blk.Cid()] = blk.RawData()
	}
	raw, ok := out.blocks[out.root]
	if !ok {
		return nil, fmt.Errorf("commit block %s missing from CAR", out.root)
	}
	var c repo.Commit
	if err := c.UnmarshalCBOR(bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("decode commit: %w", err)
	}
	if err := c.VerifyStructure(); err != nil {
		return nil, fmt.Errorf("commit structure: %w", err)
	}
	out.commit = &c
	return out, nil
}

// Op is one op of a verified commit, with its new value.
type Op struct {
	Collection, RKey string
	Action           string   // create, update, delete
	CID              *cid.Cid // nil for a delete
	Value            []byte   // the record as DAG-CBOR; nil for a delete
}

// Commit is a verified #commit, as CheckCommit hands it to the write path.
type Commit struct {
	DID, Rev string
	CID      cid.Cid // the signed commit
	Data     cid.Cid // the commit's MST root
	Ops      []Op
	// SigningKey (multibase) is the key resolved afresh to verify the
	// signature when the first key did not; "" when the first key did.
	// The caller saves it, so that the next commit finds it cached.
	SigningKey string
}

// KeyFunc returns the signing key to check a commit with; refresh asks for
// a fresh resolution after a failed check. Without refresh it may return
// nil and no error when no key is known yet: a fresh one is asked for.
type KeyFunc func(ctx context.Context, refresh bool) (atcrypto.PublicKey, error)

// CheckCommit verifies a #commit against the repo's stored state (prevData
// must equal prevDataWant when it is set) and returns its changes, or a
// *CommitError. now is the clock a rev may not run ahead of by more than
// MaxFutureRev. With
// full unset only structure and the chain are checked: the CAR parses, the
// commit matches the message, the values of the ops are present, and
// prevData, when given, is the stored data CID; not the signature nor the
// inversion.
func CheckCommit(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Commit, prevDataWant string,
	key KeyFunc, full bool, now time.Time) (*Commit, error) {
	did, rev := msg.Repo, msg.Rev
	tid, err := syntax.ParseTID(rev)
	if err != nil {
		return nil, Reject(did, rev, RejectMalformed, "rev: %w", err)
	}
	if tid.Time().After(now.Add(MaxFutureRev)) {
		return nil, Reject(did, rev, RejectFutureRev, "rev time %s is more than %s ahead", tid.Time().UTC().Format(time.RFC3339), MaxFutureRev)
	}
	if len(msg.Blocks) > MaxCommitBlocks {
		return nil, Reject(did, rev, RejectTooLarge, "%d bytes of blocks, limit %d", len(msg.Blocks), MaxCommitBlocks)
	}
	if len(msg.Ops) > MaxCommitOps {
		return nil, Reject(did, rev, RejectTooLarge, "%d ops, limit %d", len(msg.Ops), MaxCommitOps)
	}
	cc, err := readCommitCAR(msg.Blocks)
	if err != nil {
		return nil, Reject(did, rev, RejectMalformed, "%w", err)
	}
	if cc.root != cid.Cid(msg.Commit) {
		return nil, Reject(did, rev, RejectCIDMismatch, "message commit %s, CAR root %s", cid.Cid(msg.Commit), cc.root)
	}
	if cc.commit.DID != did || cc.commit.Rev != rev {
		return nil, Reject(did, rev, RejectCIDMismatch, "signed commit is %s@%s", cc.commit.DID, cc.commit.Rev)
	}
	out := &Commit{DID: did, Rev: rev, CID: cc.root, Data: cc.commit.Data}
	for _, op := range msg.Ops {
		coll, rkey, err := syntax.ParseRepoPath(op.Path)
		if err != nil {
			return nil, Reject(did, rev, RejectBadOps, "op path %q: %w", op.Path, err)
		}
		ch := Op{Collection: coll.String(), RKey: rkey.String(), Action: op.Action}
		switch op.Action {
		case "create", "update":
			if op.Cid == nil {
				return nil, Reject(did, rev, RejectBadOps, "%s %s without cid", op.Action, op.Path)
			}
			c := cid.Cid(*op.Cid)
			val, ok := cc.blocks[c]
			if !ok {
				return nil, Reject(did, rev, RejectBadOps, "value %s of %s missing from CAR", c, op.Path)
			}
			ch.CID, ch.Value = &c, val
		case "delete":
		default:
			return nil, Reject(did, rev, RejectBadOps, "unknown action %q at %s", op.Action, op.Path)
		}
		out.Ops = append(out.Ops, ch)
	}
	if !full {
		// Structure only, but the chain is still checked when the
		// message carries it: it costs nothing and catches a lost commit.
		if msg.PrevData != nil && prevDataWant != "" && cid.Cid(*msg.PrevData).String() != prevDataWant {
			return nil, Reject(did, rev, RejectBrokenChain, "prevData %s, stored data %s", cid.Cid(*msg.PrevData), prevDataWant)
		}
		return out, nil
	}

	// Signature, with one refresh of the identity on failure.
	fresh, err := Signature(ctx, cc.commit, key)
	if err != nil {
		return nil, Reject(did, rev, RejectBadSignature, "%w", err)
	}
	if fresh != nil {
		out.SigningKey = fresh.Multibase()
	}

	// Chain: the commit must build on the data we hold.
	if msg.PrevData == nil {
		return nil, Reject(did, rev, RejectBrokenChain, "no prevData: cannot check the chain")
	}
	prevData := cid.Cid(*msg.PrevData)
	if prevDataWant != "" && prevData.String() != prevDataWant {
		return nil, Reject(did, rev, RejectBrokenChain, "prevData %s, stored data %s", prevData, prevDataWant)
	}

	// Sync 1.1: the ops, inverted on the new tree, must give prevData.
	if err := checkInversion(ctx, cc, msg, prevData); err != nil {
		return nil, err
	}
	return out, nil
}

// checkInversion is the sync 1.1 proof of a commit: each created or updated
// value is the one the commit's tree (read from the CAR, which must hold
// every MST node the inversion reads) has at its path, and the ops, undone
// on that tree, give back prevData. The ops' paths are used as MST keys as
// they are: CheckCommit validates them first.
func checkInversion(ctx context.Context, cc *commitCAR, msg *comatproto.SyncSubscribeRepos_Commit, prevData cid.Cid) error {
	did, rev := msg.Repo, msg.Rev
	tree, err := mst.LoadTreeFromStore(ctx, cc.blocks, cc.commit.Data)
	if err != nil {
		return Reject(did, rev, RejectMalformed, "load MST: %w", err)
	}
	ops := make([]repo.Operation, 0, len(msg.Ops))
	for _, op := range msg.Ops {
		o := repo.Operation{Path: op.Path}
		if op.Cid != nil && (op.Action == "create" || op.Action == "update") {
			v := cid.Cid(*op.Cid)
			o.Value = &v
		}
		if op.Prev != nil {
			p := cid.Cid(*op.Prev)
			o.Prev = &p
		}
		switch {
		case op.Action == "create" && o.Prev != nil, op.Action != "create" && o.Prev == nil:
			return Reject(did, rev, RejectBadOps, "%s %s: prev must be set exactly for updates and deletes", op.Action, op.Path)
		}
		if o.Value != nil {
			got, err := tree.Get([]byte(op.Path))
			if err != nil || got == nil || *got != *o.Value {
				return Reject(did, rev, RejectBadOps, "%s: op cid does not match the tree", op.Path)
			}
		}
		ops = append(ops, o)
	}
	ops, err = repo.NormalizeOps(ops)
	if err != nil {
		return Reject(did, rev, RejectBadOps, "%w", err)
	}
	inv := tree.Copy()
	for i := range ops {
		if err := repo.InvertOp(&inv, &ops[i]); err != nil {
			return Reject(did, rev, RejectBrokenChain, "invert %s: %w", ops[i].Path, err)
		}
	}
	root, err := inv.RootCID()
	if err != nil {
		return Reject(did, rev, RejectBrokenChain, "inverted tree: %w", err)
	}
	if *root != prevData {
		return Reject(did, rev, RejectBrokenChain, "ops invert to %s, prevData is %s", root, prevData)
	}
	return nil
}

// CheckSync verifies a #sync message's signed commit and returns it, or a
// *CommitError. With full unset the signature is not checked.
func CheckSync(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Sync, key KeyFunc, full bool) (*repo.Commit, error) {
	if len(msg.Blocks) > MaxCommitBlocks {
		return nil, Reject(msg.Did, msg.Rev, RejectTooLarge, "%d bytes of blocks", len(msg.Blocks))
	}
	cc, err := readCommitCAR(msg.Blocks)
	if err != nil {
		return nil, Reject(msg.Did, msg.Rev, RejectMalformed, "%w", err)
	}
	if cc.commit.DID != msg.Did || cc.commit.Rev != msg.Rev {
		return nil, Reject(msg.Did, msg.Rev, RejectCIDMismatch, "signed commit is %s@%s", cc.commit.DID, cc.commit.Rev)
	}
	if !full {
		return cc.commit, nil
	}
	if _, err := Signature(ctx, cc.commit, key); err != nil {
		return nil, Reject(msg.Did, msg.Rev, RejectBadSignature, "%w", err)
	}
	return cc.commit, nil
}

// Signature checks c's signature with the key from key and, if that fails
// (or key knows none yet), once more with a freshly resolved key: the
// account may have rotated its key. It returns the fresh key when that is
// the one that verified, nil when the first did. Live commits, #sync
// messages and backfilled repos are all checked through it.
func Signature(ctx context.Context, c *repo.Commit, key KeyFunc) (fresh atcrypto.PublicKey, err error) {
	pub, err := key(ctx, false)
	if err != nil {
		return nil, err
	}
	if pub != nil && c.VerifySignature(pub) == nil {
		return nil, nil
	}
	if pub, err = key(ctx, true); err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, errors.New("identity has no signing key")
	}
	if err := c.VerifySignature(pub); err != nil {
		return nil, err
	}
	return pub, nil
}
