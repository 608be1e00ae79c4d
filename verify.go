package cistern

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

	"github.com/cistern-dev/cistern/store"
)

// Limits a live commit must respect, after the relay's own.
const (
	// MaxCommitBlocks bounds the CAR bytes of one #commit (the lexicon's 2 MB).
	MaxCommitBlocks = 2_000_000
	// MaxCommitOps bounds the ops of one #commit.
	MaxCommitOps = 200
	// MaxFutureRev is how far ahead of the clock a rev may be.
	MaxFutureRev = 5 * time.Minute
)

// RejectReason says why a live commit was not applied.
type RejectReason string

// The reasons a commit is rejected.
const (
	RejectMalformed    RejectReason = "malformed"
	RejectBadSignature RejectReason = "bad_signature"
	RejectCIDMismatch  RejectReason = "cid_mismatch"
	RejectBrokenChain  RejectReason = "broken_chain"
	RejectFutureRev    RejectReason = "future_rev"
	RejectTooLarge     RejectReason = "too_large"
	RejectBadOps       RejectReason = "bad_ops"
)

// RejectReasons lists every reason, for metrics.
var RejectReasons = []RejectReason{RejectMalformed, RejectBadSignature, RejectCIDMismatch,
	RejectBrokenChain, RejectFutureRev, RejectTooLarge, RejectBadOps}

// CommitError says why a live commit was not applied.
type CommitError struct {
	DID    string
	Rev    string
	Reason RejectReason
	Err    error
}

func (e *CommitError) Error() string {
	return fmt.Sprintf("commit %s@%s rejected (%s): %v", e.DID, e.Rev, e.Reason, e.Err)
}

func (e *CommitError) Unwrap() error { return e.Err }

func reject(did, rev string, reason RejectReason, format string, args ...any) *CommitError {
	return &CommitError{DID: did, Rev: rev, Reason: reason, Err: fmt.Errorf(format, args...)}
}

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

// opChange is one op of a verified commit, with its new value.
type opChange struct {
	collection, rkey string
	action           string // create, update, delete
	cid              *cid.Cid
	value            []byte
}

// verifiedCommit is what checkCommit hands to the write path.
type verifiedCommit struct {
	did, rev string
	commit   cid.Cid // the signed commit
	data     cid.Cid // the commit's MST root
	ops      []opChange
	// signingKey (multibase) is the key resolved afresh to verify the
	// signature when the repo's cached key did not; "" when the cached key
	// did. The commit's write saves it on the repo.
	signingKey string
}

// advance returns r moved to the verified commit: its rev, data and commit,
// and the signing key if one was resolved afresh.
func (vc *verifiedCommit) advance(r store.Repo, now time.Time) *store.Repo {
	r.Rev, r.Data, r.Commit, r.Updated = vc.rev, vc.data.String(), vc.commit.String(), now
	if vc.signingKey != "" {
		r.SigningKey = vc.signingKey
	}
	return &r
}

// keyFunc returns the signing key to check a commit with; refresh asks for
// a fresh resolution after a failed check.
type keyFunc func(ctx context.Context, refresh bool) (atcrypto.PublicKey, error)

// checkCommit verifies a #commit against the repo's stored state (prevData
// must equal prevDataWant when it is set) and returns its changes. With
// full unset only structure and the chain are checked: the CAR parses, the
// commit matches the message, the values of the ops are present, and
// prevData, when given, is the stored data CID; not the signature nor the
// inversion.
func checkCommit(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Commit, prevDataWant string,
	key keyFunc, full bool, now time.Time) (*verifiedCommit, error) {
	did, rev := msg.Repo, msg.Rev
	tid, err := syntax.ParseTID(rev)
	if err != nil {
		return nil, reject(did, rev, RejectMalformed, "rev: %w", err)
	}
	if tid.Time().After(now.Add(MaxFutureRev)) {
		return nil, reject(did, rev, RejectFutureRev, "rev time %s is more than %s ahead", tid.Time().UTC().Format(time.RFC3339), MaxFutureRev)
	}
	if len(msg.Blocks) > MaxCommitBlocks {
		return nil, reject(did, rev, RejectTooLarge, "%d bytes of blocks, limit %d", len(msg.Blocks), MaxCommitBlocks)
	}
	if len(msg.Ops) > MaxCommitOps {
		return nil, reject(did, rev, RejectTooLarge, "%d ops, limit %d", len(msg.Ops), MaxCommitOps)
	}
	cc, err := readCommitCAR(msg.Blocks)
	if err != nil {
		return nil, reject(did, rev, RejectMalformed, "%w", err)
	}
	if cc.root != cid.Cid(msg.Commit) {
		return nil, reject(did, rev, RejectCIDMismatch, "message commit %s, CAR root %s", cid.Cid(msg.Commit), cc.root)
	}
	if cc.commit.DID != did || cc.commit.Rev != rev {
		return nil, reject(did, rev, RejectCIDMismatch, "signed commit is %s@%s", cc.commit.DID, cc.commit.Rev)
	}
	out := &verifiedCommit{did: did, rev: rev, commit: cc.root, data: cc.commit.Data}
	for _, op := range msg.Ops {
		coll, rkey, err := syntax.ParseRepoPath(op.Path)
		if err != nil {
			return nil, reject(did, rev, RejectBadOps, "op path %q: %w", op.Path, err)
		}
		ch := opChange{collection: coll.String(), rkey: rkey.String(), action: op.Action}
		switch op.Action {
		case "create", "update":
			if op.Cid == nil {
				return nil, reject(did, rev, RejectBadOps, "%s %s without cid", op.Action, op.Path)
			}
			c := cid.Cid(*op.Cid)
			val, ok := cc.blocks[c]
			if !ok {
				return nil, reject(did, rev, RejectBadOps, "value %s of %s missing from CAR", c, op.Path)
			}
			ch.cid, ch.value = &c, val
		case "delete":
		default:
			return nil, reject(did, rev, RejectBadOps, "unknown action %q at %s", op.Action, op.Path)
		}
		out.ops = append(out.ops, ch)
	}
	if !full {
		// Structure only, but the chain is still checked when the
		// message carries it: it costs nothing and catches a lost commit.
		if msg.PrevData != nil && prevDataWant != "" && cid.Cid(*msg.PrevData).String() != prevDataWant {
			return nil, reject(did, rev, RejectBrokenChain, "prevData %s, stored data %s", cid.Cid(*msg.PrevData), prevDataWant)
		}
		return out, nil
	}

	// Signature, with one refresh of the identity on failure.
	fresh, err := verifySignature(ctx, cc.commit, key)
	if err != nil {
		return nil, reject(did, rev, RejectBadSignature, "%w", err)
	}
	if fresh != nil {
		out.signingKey = fresh.Multibase()
	}

	// Chain: the commit must build on the data we hold.
	if msg.PrevData == nil {
		return nil, reject(did, rev, RejectBrokenChain, "no prevData: cannot check the chain")
	}
	prevData := cid.Cid(*msg.PrevData)
	if prevDataWant != "" && prevData.String() != prevDataWant {
		return nil, reject(did, rev, RejectBrokenChain, "prevData %s, stored data %s", prevData, prevDataWant)
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
// they are: checkCommit validates them first.
func checkInversion(ctx context.Context, cc *commitCAR, msg *comatproto.SyncSubscribeRepos_Commit, prevData cid.Cid) error {
	did, rev := msg.Repo, msg.Rev
	tree, err := mst.LoadTreeFromStore(ctx, cc.blocks, cc.commit.Data)
	if err != nil {
		return reject(did, rev, RejectMalformed, "load MST: %w", err)
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
			return reject(did, rev, RejectBadOps, "%s %s: prev must be set exactly for updates and deletes", op.Action, op.Path)
		}
		if o.Value != nil {
			got, err := tree.Get([]byte(op.Path))
			if err != nil || got == nil || *got != *o.Value {
				return reject(did, rev, RejectBadOps, "%s: op cid does not match the tree", op.Path)
			}
		}
		ops = append(ops, o)
	}
	ops, err = repo.NormalizeOps(ops)
	if err != nil {
		return reject(did, rev, RejectBadOps, "%w", err)
	}
	inv := tree.Copy()
	for i := range ops {
		if err := repo.InvertOp(&inv, &ops[i]); err != nil {
			return reject(did, rev, RejectBrokenChain, "invert %s: %w", ops[i].Path, err)
		}
	}
	root, err := inv.RootCID()
	if err != nil {
		return reject(did, rev, RejectBrokenChain, "inverted tree: %w", err)
	}
	if *root != prevData {
		return reject(did, rev, RejectBrokenChain, "ops invert to %s, prevData is %s", root, prevData)
	}
	return nil
}

// checkSync verifies a #sync message's signed commit and returns it.
func checkSync(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Sync, key keyFunc, full bool) (*repo.Commit, error) {
	if len(msg.Blocks) > MaxCommitBlocks {
		return nil, reject(msg.Did, msg.Rev, RejectTooLarge, "%d bytes of blocks", len(msg.Blocks))
	}
	cc, err := readCommitCAR(msg.Blocks)
	if err != nil {
		return nil, reject(msg.Did, msg.Rev, RejectMalformed, "%w", err)
	}
	if cc.commit.DID != msg.Did || cc.commit.Rev != msg.Rev {
		return nil, reject(msg.Did, msg.Rev, RejectCIDMismatch, "signed commit is %s@%s", cc.commit.DID, cc.commit.Rev)
	}
	if !full {
		return cc.commit, nil
	}
	if _, err := verifySignature(ctx, cc.commit, key); err != nil {
		return nil, reject(msg.Did, msg.Rev, RejectBadSignature, "%w", err)
	}
	return cc.commit, nil
}

// verifySignature checks c's signature with the key from key and, if that
// fails, once more with a freshly resolved key (the account may have
// rotated its key). It returns the fresh key when that is the one that
// verified, nil when the first did.
func verifySignature(ctx context.Context, c *repo.Commit, key keyFunc) (fresh atcrypto.PublicKey, err error) {
	pub, err := key(ctx, false)
	if err != nil {
		return nil, err
	}
	if c.VerifySignature(pub) == nil {
		return nil, nil
	}
	if pub, err = key(ctx, true); err != nil {
		return nil, err
	}
	if err := c.VerifySignature(pub); err != nil {
		return nil, err
	}
	return pub, nil
}
