package testnet

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
)

// Fault is a way to corrupt a #commit frame (see Account.ApplyFaulty). The
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
	// FaultBrokenChain sets prevData to a CID that the ops do not invert to.
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
)

var faultNames = [...]string{"none", "bad-signature", "wrong-commit-cid", "broken-chain", "future-rev", "oversized", "malformed"}

// String returns the fault's name.
func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Faults lists every fault except FaultNone.
var Faults = []Fault{FaultBadSignature, FaultWrongCommitCID, FaultBrokenChain, FaultFutureRev, FaultOversized, FaultMalformed}

// corrupt applies fault to frame; blks are the frame's CAR blocks, the
// signed commit first. Called with a.mu held.
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
	switch fault {
	case FaultBadSignature:
		other, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			return err
		}
		c := a.commit
		c.Sig = nil
		raw, cc, err := signCommit(&c, other)
		if err != nil {
			return err
		}
		blks[0] = carBlock{cc, raw}
		return rebuild()
	case FaultWrongCommitCID:
		frame.Commit = lexutil.LexLink(cborCID([]byte("testnet: not the commit " + a.commit.Rev)))
	case FaultBrokenChain:
		pd := lexutil.LexLink(cborCID([]byte("testnet: broken chain " + a.commit.Rev)))
		frame.PrevData = &pd
	case FaultFutureRev:
		c := a.commit
		c.Sig = nil
		c.Rev = syntax.NewTIDFromTime(time.Now().Add(10*time.Minute), 0).String()
		raw, cc, err := signCommit(&c, a.key)
		if err != nil {
			return err
		}
		blks[0] = carBlock{cc, raw}
		frame.Rev = c.Rev
		return rebuild()
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
	default:
		return fmt.Errorf("testnet: unknown fault %v", fault)
	}
	return nil
}
