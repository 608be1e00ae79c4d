package backfill

import (
	"fmt"
)

// Strategy says how a repo is fetched.
//
// Both strategies store the same records, CID for CID: the records of the
// stored collections under the repo's signed commit.
type Strategy string

const (
	// StrategyAuto picks per repo: full when the filter stores every
	// collection, when the repo holds nothing but stored collections (as its
	// describeRepo says), when the MST nodes walked show that more than
	// AutoMaxShare of its keys lie in the ranges needed, after a sparse
	// attempt of the repo failed on a block, and on hosts that do not serve
	// com.atproto.sync.getBlocks; sparse otherwise. It is the default.
	StrategyAuto Strategy = "auto"
	// StrategyFull downloads the whole repo with com.atproto.sync.getRepo.
	StrategyFull Strategy = "full"
	// StrategySparse fetches the signed commit (getLatestCommit, then the
	// commit block with getBlocks), then only the MST nodes on the paths
	// into the key ranges of the stored collections (and of the signal
	// collections, until a signal record is found, when the repo is tracked
	// by signal), then the record blocks that differ from what is stored,
	// all with com.atproto.sync.getBlocks in batches of BlocksPerRequest.
	// Every block is checked against the CID that names it. On a host that
	// does not serve getBlocks it falls back to full (and remembers the host
	// for MaxBackoff). A block missing because the repo moved on meanwhile
	// makes the walk start again from the new commit (twice at most). Each
	// getBlocks answer is charged to the byte budget while it is decoded;
	// the keys and CIDs of the wanted records (about 100 bytes each) are
	// held until the diff ends, outside the budget.
	StrategySparse Strategy = "sparse"
)

// AutoMaxShare is the largest estimated share of a repo's keys that
// StrategyAuto still fetches sparsely. The share is estimated as the walk
// goes down the MST, each child of a node counting for an equal part of the
// node's share; when more than 16 subtrees are still to fetch and their
// share is above AutoMaxShare, the walk gives up and fetches the repo with
// getRepo (beyond that share a sparse walk fetches nearly as many bytes as
// getRepo, in many more requests). A narrow range keeps few subtrees to
// fetch at each level, so it is never given up. The estimate is coarse (the
// top of an MST holds few keys, so its subtrees differ much in size): a
// range of half a repo may go either way, one of nine tenths is fetched
// whole.
const AutoMaxShare = 0.25

// ParseStrategy parses "auto", "full" or "sparse"; "" is StrategyAuto.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(s) {
	case "":
		return StrategyAuto, nil
	case StrategyAuto, StrategyFull, StrategySparse:
		return Strategy(s), nil
	}
	return "", fmt.Errorf("backfill: unknown strategy %q (want auto, full or sparse)", s)
}
