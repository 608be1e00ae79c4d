package testnet

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
)

// Fault is a way to corrupt a #commit frame (see Account.ApplyFaulty), or
// the signed commit of a #sync frame (see Account.EmitSyncFaulty). The
// account's real repo always advances with the correct commit; only the
// frame is wrong.
type Fault int

// The commit faults.
const (
	// FaultNone emits the correct frame.
	FaultNone Fault = iota
	// FaultBadSignature signs the frame's commit with a different key.
	FaultBadSignature
	// FaultWrongCommitCID sets the frame's commit field to a CID that is not
	// the CAR root.
	FaultWrongCommitCID
	// FaultBrokenChain sets prevData to a CID that the ops do not invert to
	// (and that is not the data an indexer holds: comparing the two shows
	// it, without inverting; FaultMissingOp is seen only by inverting).
	FaultBrokenChain
	// FaultFutureRev signs (with the right key) a commit whose rev is ten
	// minutes in the future, and puts it in the frame.
	FaultFutureRev
	// FaultOversized pads the frame's blocks with a raw block so that they
	// total about 2,010,000 bytes: over the lexicon's 2,000,000-byte limit,
	// under cbor-gen's 2 MiB decoding limit. (A commit of more than 200
	// ops is made by passing that many ops to Apply.)
	FaultOversized
	// FaultMalformed replaces the frame's blocks with a CAR whose root block
	// is not valid CBOR.
	FaultMalformed
	// FaultMissingOp drops the frame's last op; the signed commit, the CAR
	// and prevData stay correct, so only the sync 1.1 inversion (the
	// remaining ops do not lead back to prevData) shows it.
	FaultMissingOp
	// FaultWrongOpCID gives the frame's first create or update op the CID of
	// another record value, which the CAR carries too: the op's CID is not
	// the one the signed tree holds at its path. The commit must have a
	// create or update.
	FaultWrongOpCID
	// FaultMissingBlock leaves out of the frame's CAR the MST node where the
	// first op's key is, or would be for a delete, in the new tree: a node
	// that inverting the op needs. (When that node is the root, the tree
	// cannot be loaded at all.)
	FaultMissingBlock
	// FaultWrongCommitDID signs (with the right key) a commit that names
	// another DID than the frame's repo, and puts it in the frame.
	FaultWrongCommitDID
	// FaultWrongCommitRev signs (with the right key) a commit whose rev is
	// not the frame's rev, and puts it in the frame.
	FaultWrongCommitRev
)

var faultNames = [...]string{"none", "bad-signature", "wrong-commit-cid", "broken-chain", "future-rev", "oversized", "malformed",
	"missing-op", "wrong-op-cid", "missing-block", "wrong-commit-did", "wrong-commit-rev"}

// String returns the fault's name.
func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Faults lists every fault except FaultNone.
var Faults = []Fault{FaultBadSignature, FaultWrongCommitCID, FaultBrokenChain, FaultFutureRev, FaultOversized, FaultMalformed,
	FaultMissingOp, FaultWrongOpCID, FaultMissingBlock, FaultWrongCommitDID, FaultWrongCommitRev}

// resignLocked signs a copy of the current commit, changed by change (if
// not nil), with key. Called with a.mu held.
func (a *Account) resignLocked(key atcrypto.PrivateKey, change func(c *repo.Commit)) (carBlock, repo.Commit, error) {
	c := a.commit
	c.Sig = nil
	if change != nil {
		change(&c)
	}
	raw, cc, err := signCommit(&c, key)
	if err != nil {
		return carBlock{}, c, err
	}
	return carBlock{cc, raw}, c, nil
}

// signedVariantLocked returns the current commit signed as fault wants it,
// for the faults that change the signed commit itself (FaultBadSignature,
// FaultFutureRev, FaultWrongCommitDID, FaultWrongCommitRev); ok is false
// for the others. Called with a.mu held.
func (a *Account) signedVariantLocked(fault Fault) (blk carBlock, c repo.Commit, ok bool, err error) {
	switch fault {
	case FaultBadSignature:
		other, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			return carBlock{}, c, true, err
		}
		blk, c, err = a.resignLocked(other, nil)
		return blk, c, true, err
	case FaultFutureRev:
		blk, c, err = a.resignLocked(a.key, func(c *repo.Commit) {
			c.Rev = syntax.NewTIDFromTime(time.Now().Add(10*time.Minute), 0).String()
		})
		return blk, c, true, err
	case FaultWrongCommitDID:
		blk, c, err = a.resignLocked(a.key, func(c *repo.Commit) { c.DID = otherDID(a.did).String() })
		return blk, c, true, err
	case FaultWrongCommitRev:
		blk, c, err = a.resignLocked(a.key, func(c *repo.Commit) { c.Rev = a.clock.Next().String() })
		return blk, c, true, err
	}
	return carBlock{}, c, false, nil
}

// otherDID returns a did:plc derived from did and different from it.
func otherDID(did syntax.DID) syntax.DID {
	h := sha256.Sum256([]byte("testnet: other than " + did))
	return syntax.DID("did:plc:" + plcBase32.EncodeToString(h[:])[:24])
}

// corrupt applies fault to frame; blks are the frame's CAR blocks, the
// signed commit first. Called with a.mu held, after the account advanced to
// the commit.
func (a *Account) corrupt(fault Fault, frame *comatproto.SyncSubscribeRepos_Commit, blks []carBlock) error {
	rebuild := func() error {
		var buf bytes.Buffer
		if err := writeCAR(&buf, blks[0].cid, blks); err != nil {
			return err
		}
		frame.Blocks = buf.Bytes()
		frame.Commit = lexutil.LexLink(blks[0].cid)
		return nil
	}
	if blk, c, ok, err := a.signedVariantLocked(fault); ok {
		if err != nil {
			return err
		}
		blks[0] = blk
		if fault == FaultFutureRev {
			frame.Rev = c.Rev
		}
		return rebuild()
	}
	switch fault {
	case FaultWrongCommitCID:
		frame.Commit = lexutil.LexLink(cborCID([]byte("testnet: not the commit " + a.commit.Rev)))
	case FaultBrokenChain:
		pd := lexutil.LexLink(cborCID([]byte("testnet: broken chain " + a.commit.Rev)))
		frame.PrevData = &pd
	case FaultOversized:
		size := 0
		for _, b := range blks {
			size += len(b.data) + 40
		}
		pad := make([]byte, max(1, 2_010_000-size))
		_, _ = rand.Read(pad)
		blks = append(blks, carBlock{rawCID(pad), pad})
		return rebuild()
	case FaultMalformed:
		garbage := []byte{0xff, 0xfe, 0x5c, 0x00, 0x1f, 0xbf, 0x61}
		blks = []carBlock{{cborCID(garbage), garbage}}
		var buf bytes.Buffer
		if err := writeCAR(&buf, blks[0].cid, blks); err != nil {
			return err
		}
		frame.Blocks = buf.Bytes()
	case FaultMissingOp:
		if len(frame.Ops) == 0 {
			return fmt.Errorf("testnet: %v needs a commit with ops", fault)
		}
		frame.Ops = frame.Ops[:len(frame.Ops)-1]
	case FaultWrongOpCID:
		for _, op := range frame.Ops {
			if op.Cid == nil {
				continue
			}
			coll, _ := splitPath(op.Path)
			val := Post(coll, "testnet: not the record at "+op.Path)
			c := cborCID(val)
			l := lexutil.LexLink(c)
			op.Cid = &l
			blks = append(blks, carBlock{c, val})
			return rebuild()
		}
		return fmt.Errorf("testnet: %v needs a create or update", fault)
	case FaultMissingBlock:
		if len(frame.Ops) == 0 {
			return fmt.Errorf("testnet: %v needs a commit with ops", fault)
		}
		path, err := mstPath(a.blocks, a.commit.Data, []byte(frame.Ops[0].Path))
		if err != nil {
			return err
		}
		drop := path[len(path)-1]
		kept := make([]carBlock, 0, len(blks))
		for _, b := range blks {
			if b.cid != drop {
				kept = append(kept, b)
			}
		}
		if len(kept) == len(blks) {
			return fmt.Errorf("testnet: %v: MST node %s is not in the frame", fault, drop)
		}
		blks = kept
		return rebuild()
	default:
		return fmt.Errorf("testnet: unknown fault %v", fault)
	}
	return nil
}

// EmitSyncFaulty emits a #sync frame for the current commit, like EmitSync,
// but with the signed commit in it corrupted by fault: FaultBadSignature,
// FaultFutureRev (the frame's rev follows the commit's), FaultWrongCommitDID
// or FaultWrongCommitRev. Other faults are refused with an error. It returns
// the frame's sequence number.
func (a *Account) EmitSyncFaulty(fault Fault) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	blk, c, ok, err := a.signedVariantLocked(fault)
	if !ok {
		return 0, fmt.Errorf("testnet: %v does not apply to a #sync frame", fault)
	}
	if err != nil {
		return 0, err
	}
	rev := a.commit.Rev
	if fault == FaultFutureRev {
		rev = c.Rev
	}
	return a.emitSyncFrameLocked(blk, rev)
}
