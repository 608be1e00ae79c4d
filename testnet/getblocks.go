package testnet

import (
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/ipfs/go-cid"
)

// serveGetBlocks answers com.atproto.sync.getBlocks as the reference PDS
// does: the blocks named by the repeated cids parameter, from the repo's
// current blocks (the commit, MST nodes and records, plus blocks of older
// commits not yet collected), as a CAR without roots; a block the repo
// lacks makes the whole answer 400 InvalidRequest "Could not find cids".
// The faults armed with DisableGetBlocks, OmitBlock, CorruptBlock and
// LoseBlock change the answer.
func (h *Host) serveGetBlocks(w http.ResponseWriter, r *http.Request) {
	if h.faults.getBlocksDisabled() {
		writeXRPCError(w, http.StatusNotImplemented, "MethodNotImplemented", "method not implemented: com.atproto.sync.getBlocks")
		return
	}
	a := h.repoParam(w, r, "did", false)
	if a == nil {
		return
	}
	var cids []cid.Cid
	for _, s := range r.URL.Query()["cids"] {
		c, err := cid.Decode(s)
		if err != nil {
			writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "cids must be valid CIDs: "+s)
			return
		}
		cids = append(cids, c)
	}
	blks := make([]carBlock, 0, len(cids))
	var missing []string
	a.mu.Lock()
	for _, c := range cids {
		switch data, ok := a.blocks.m[c]; {
		case h.faults.lost(c):
			missing = append(missing, c.String())
		case ok:
			blks = append(blks, carBlock{c, data})
		case c == a.commitCID:
			blks = append(blks, carBlock{c, a.commitBytes})
		default:
			missing = append(missing, c.String())
		}
	}
	a.mu.Unlock()
	if len(missing) > 0 {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "Could not find cids: "+strings.Join(missing, ","))
		return
	}
	blks = h.faults.applyBlockFaults(blks)
	h.served.add(blks)
	w.Header().Set("Content-Type", "application/vnd.ipld.car")
	_ = writeCARNoRoots(w, blks)
}

// DisableGetBlocks makes the host answer com.atproto.sync.getBlocks with
// 501 MethodNotImplemented, as a PDS that does not implement it would, until
// it is called with false (or ClearFaults).
func (h *Host) DisableGetBlocks(disabled bool) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	h.faults.noGetBlocks = disabled
}

// OmitBlock makes every getBlocks answer leave out the block c, while
// answering 200 with the other blocks asked for, until ClearFaults.
func (h *Host) OmitBlock(c cid.Cid) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	if h.faults.blockFaults == nil {
		h.faults.blockFaults = make(map[cid.Cid]blockFault)
	}
	h.faults.blockFaults[c] = blockOmitted
}

// CorruptBlock makes every getBlocks answer carry the block c with one bit
// of its bytes flipped, under its real CID, so that it no longer hashes to
// that CID, until ClearFaults.
func (h *Host) CorruptBlock(c cid.Cid) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	if h.faults.blockFaults == nil {
		h.faults.blockFaults = make(map[cid.Cid]blockFault)
	}
	h.faults.blockFaults[c] = blockCorrupted
}

// LoseBlock makes the host answer every getBlocks request that asks for
// the block c as if it did not hold it: 400 InvalidRequest "Could not find
// cids", as the reference PDS answers for a block it lacks (one of an old
// commit, collected since), until ClearFaults.
func (h *Host) LoseBlock(c cid.Cid) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	if h.faults.blockFaults == nil {
		h.faults.blockFaults = make(map[cid.Cid]blockFault)
	}
	h.faults.blockFaults[c] = blockLost
}

// ServedBlocks returns the CIDs of the blocks that getBlocks answers carried
// since the host started or since ResetRequests, in the order served.
func (h *Host) ServedBlocks() []cid.Cid { return h.served.get() }

type blockFault int

const (
	blockOmitted blockFault = iota + 1
	blockCorrupted
	blockLost
)

// lost reports whether LoseBlock was armed for c.
func (f *hostFaults) lost(c cid.Cid) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blockFaults[c] == blockLost
}

func (f *hostFaults) getBlocksDisabled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.noGetBlocks
}

// applyBlockFaults returns blks with the armed block faults applied.
func (f *hostFaults) applyBlockFaults(blks []carBlock) []carBlock {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.blockFaults) == 0 {
		return blks
	}
	out := make([]carBlock, 0, len(blks))
	for _, b := range blks {
		switch f.blockFaults[b.cid] {
		case blockOmitted:
			continue
		case blockCorrupted:
			data := append([]byte(nil), b.data...)
			data[len(data)-1] ^= 0x01
			b.data = data
		}
		out = append(out, b)
	}
	return out
}

// servedBlocks records the CIDs of the blocks getBlocks served.
type servedBlocks struct {
	mu   sync.Mutex
	cids []cid.Cid
}

func (s *servedBlocks) add(blks []carBlock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range blks {
		s.cids = append(s.cids, b.cid)
	}
}

func (s *servedBlocks) get() []cid.Cid {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cids)
}

func (s *servedBlocks) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cids = nil
}
