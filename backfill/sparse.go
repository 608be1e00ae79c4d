package backfill

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
)

// sparseRestarts is how many times a sparse walk starts again from a newer
// commit when a block it asks for is gone (the repo changed meanwhile, and
// the host dropped the blocks of the old commit).
const sparseRestarts = 2

// autoMaxFrontier is how many subtrees an automatic sparse walk may have to
// fetch next, while their estimated share of the repo is above
// AutoMaxShare, before it gives up for getRepo.
const autoMaxFrontier = 16

// sparseRepo is what a sparse walk learned from the host: the verified
// commit and the leaves of the stored key ranges, in key order.
type sparseRepo struct {
	client *blockClient
	ident  *resolver.Identity // as verified (a key rotation resolves it afresh)
	commit *repo.Commit
	leaves []sparseLeaf
	// signal is whether a record of a signal collection was seen (only
	// looked for when asked).
	signal bool
}

type sparseLeaf struct {
	key string
	val cid.Cid
}

// sparsePlan is what a sparse walk looks for.
type sparsePlan struct {
	stored  keyRanges // the stored collections: leaves collected
	signals keyRanges // the signal collections: walked until a signal record is seen
	f       *filter.Filter
	// needSignal: the repo is tracked by signal, so the walk looks for a
	// signal record.
	needSignal bool
	// auto: give up with errTooWide when the wanted ranges are a large part
	// of the repo.
	auto bool
}

// planSparse returns what a sparse walk of a repo fetches under f, and
// whether a sparse walk may be worth it at all under the strategy.
func planSparse(f *filter.Filter, needSignal bool, strategy Strategy) (sparsePlan, bool) {
	p := sparsePlan{f: f, stored: rangesOf(f.Spec().Collections), needSignal: needSignal, auto: strategy == StrategyAuto}
	if needSignal {
		p.signals = rangesOf(f.Spec().Signals)
	}
	switch strategy {
	case StrategyFull:
		return p, false
	case StrategySparse:
		return p, true
	}
	// Auto: a filter that stores everything needs every record.
	return p, !p.stored.isEverything()
}

// active returns the ranges the walk must still descend into.
func (p *sparsePlan) active(signalSeen bool) keyRanges {
	if !p.needSignal || signalSeen {
		return p.stored
	}
	return p.stored.union(p.signals)
}

// sparse fetches and verifies the repo's commit and the MST nodes on the
// paths into the plan's ranges. It returns errNoGetBlocks when the host does
// not serve getBlocks and errTooWide when an automatic plan finds its ranges
// too large a part of the repo (from describeRepo's collections or the top
// of the MST): then the caller fetches the repo whole. Nothing is written.
func (s *Scheduler) sparse(ctx context.Context, d syntax.DID, ident *resolver.Identity, plan sparsePlan) (_ *sparseRepo, err error) {
	did := d.String()
	c, err := s.newBlockClient(ident.PDS, did)
	if err != nil {
		return nil, err
	}
	if s.noBlocks.marked(c.host) {
		return nil, errNoGetBlocks
	}
	defer func() {
		if errors.Is(err, errNoGetBlocks) {
			s.noBlocks.mark(c.host)
		}
	}()
	if plan.auto {
		colls, err := c.collections(ctx)
		var fl *failure
		switch {
		case err == nil:
			if !slices.ContainsFunc(colls, func(coll string) bool { return !plan.f.Stores(coll) }) {
				return nil, errTooWide // nothing to leave out
			}
		case errors.As(err, &fl) && fl.kind != KindRateLimited:
			// No usable hint: the walk decides.
		default:
			return nil, err // an outcome, a rate limit, ctx
		}
	}

	commitCID, err := c.latestCommit(ctx)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		sr, err := s.sparseAt(ctx, c, d, ident, commitCID, plan)
		if err == nil || !errors.Is(err, ErrBlockMissing) || attempt >= sparseRestarts {
			return sr, err
		}
		// A block of this commit is gone: if the repo moved on, walk the new
		// commit; if it did not, the host is at fault.
		now, lerr := c.latestCommit(ctx)
		if lerr != nil {
			return nil, lerr
		}
		if now == commitCID {
			return nil, err
		}
		commitCID = now
	}
}

// sparseAt walks the repo from the commit named commitCID.
func (s *Scheduler) sparseAt(ctx context.Context, c *blockClient, d syntax.DID, ident *resolver.Identity,
	commitCID cid.Cid, plan sparsePlan) (*sparseRepo, error) {
	var commit repo.Commit
	err := c.blocks(ctx, []cid.Cid{commitCID}, func(_ cid.Cid, data []byte) error {
		if err := commit.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
			return fail(KindMalformed, "commit %s: %w", commitCID, err)
		}
		if err := commit.VerifyStructure(); err != nil {
			return fail(KindMalformed, "commit %s: %w", commitCID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if commit.DID != d.String() {
		return nil, fail(KindMalformed, "commit is for %s", commit.DID)
	}
	if s.opts.Verify {
		if ident, err = s.verify(ctx, d, ident, &commit); err != nil {
			return nil, err
		}
	}
	sr := &sparseRepo{client: c, ident: ident, commit: &commit}
	if err := s.walkRanges(ctx, c, commit.Data, plan, sr); err != nil {
		return nil, err
	}
	return sr, nil
}

// subtree is an MST node still to fetch: it holds only keys strictly
// between after and before ("" meaning unbounded), and share is the part of
// the repo's keys it is estimated to hold.
type subtree struct {
	cid           cid.Cid
	after, before string
	share         float64
}

// walkRanges fetches, level by level, the MST nodes under root whose key
// span meets the plan's active ranges, every node of a level in
// BlocksPerRequest batches, and collects in sr the leaves of the stored
// ranges, sorted by key. Each node's keys must be in order and within its
// parent's bounds.
func (s *Scheduler) walkRanges(ctx context.Context, c *blockClient, root cid.Cid, plan sparsePlan, sr *sparseRepo) error {
	frontier := []subtree{{cid: root, share: 1}}
	var ks keySplitter
	for len(frontier) > 0 {
		active := plan.active(sr.signal)
		frontier = slices.DeleteFunc(frontier, func(st subtree) bool { return !active.mayOverlap(st.after, st.before) })
		if plan.auto && len(frontier) > autoMaxFrontier {
			share := 0.0
			for _, st := range frontier {
				share += st.share
			}
			if share > AutoMaxShare {
				return errTooWide
			}
		}
		byCID := make(map[cid.Cid][]subtree, len(frontier))
		cids := make([]cid.Cid, 0, len(frontier))
		for _, st := range frontier {
			if _, ok := byCID[st.cid]; !ok {
				cids = append(cids, st.cid)
			}
			byCID[st.cid] = append(byCID[st.cid], st)
		}
		var next []subtree
		err := c.blocks(ctx, cids, func(bc cid.Cid, data []byte) error {
			var nd mst.NodeData
			if err := nd.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
				return fail(KindMalformed, "MST node %s: %w", bc, err)
			}
			for _, st := range byCID[bc] {
				var err error
				if next, err = visitNode(&nd, bc, st, plan, active, &ks, sr, next); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		frontier = next
	}
	slices.SortFunc(sr.leaves, func(a, b sparseLeaf) int { return strings.Compare(a.key, b.key) })
	for i := 1; i < len(sr.leaves); i++ {
		if sr.leaves[i].key == sr.leaves[i-1].key {
			return fail(KindMalformed, "MST holds key %q twice", sr.leaves[i].key)
		}
	}
	return nil
}

// visitNode reads one MST node of the subtree st: its keys become leaves
// (stored ranges) or mark a signal seen, and its children whose span meets
// the active ranges are appended to next.
func visitNode(nd *mst.NodeData, bc cid.Cid, st subtree, plan sparsePlan, active keyRanges, ks *keySplitter,
	sr *sparseRepo, next []subtree) ([]subtree, error) {
	children := 0
	if nd.Left != nil {
		children++
	}
	for _, e := range nd.Entries {
		if e.Right != nil {
			children++
		}
	}
	share := 0.0
	if children > 0 {
		share = st.share / float64(children)
	}
	child := func(c *cid.Cid, after, before string) {
		if c != nil && active.mayOverlap(after, before) {
			next = append(next, subtree{cid: *c, after: after, before: before, share: share})
		}
	}

	prev := st.after
	var key []byte
	for i, e := range nd.Entries {
		if e.PrefixLen < 0 || int(e.PrefixLen) > len(key) {
			return next, fail(KindMalformed, "MST node %s: entry %d shares %d bytes with a key of %d", bc, i, e.PrefixLen, len(key))
		}
		key = append(key[:e.PrefixLen], e.KeySuffix...)
		k := string(key)
		if !mst.IsValidKey(key) || prev != "" && k <= prev || st.before != "" && k >= st.before {
			return next, fail(KindMalformed, "MST node %s: key %q out of order or outside its subtree", bc, k)
		}
		if i == 0 {
			child(nd.Left, st.after, k)
		}
		if plan.stored.contains(k) {
			sr.leaves = append(sr.leaves, sparseLeaf{key: k, val: e.Value})
		}
		if plan.needSignal && !sr.signal {
			if coll, _, ok := ks.split(key); ok && plan.f.IsSignal(coll) {
				sr.signal = true
			}
		}
		before := st.before
		if i+1 < len(nd.Entries) {
			before = nextKey(key, nd.Entries[i+1])
		}
		child(e.Right, k, before)
		prev = k
	}
	if len(nd.Entries) == 0 {
		child(nd.Left, st.after, st.before)
	}
	return next, nil
}

// nextKey returns the key of entry e that follows the key prev in a node,
// or "" when e's prefix length is invalid (visitNode refuses it next).
func nextKey(prev []byte, e mst.EntryData) string {
	if e.PrefixLen < 0 || int(e.PrefixLen) > len(prev) {
		return ""
	}
	return string(prev[:e.PrefixLen]) + string(e.KeySuffix)
}

// sparseValues fetches the record blocks of a sparse backfill.
type sparseValues struct {
	c *blockClient
}

func (v sparseValues) batchSize() int { return v.c.s.opts.BlocksPerRequest }

func (v sparseValues) fetch(ctx context.Context, pending []pendingValue) error {
	cids := make([]cid.Cid, 0, len(pending))
	seen := make(map[cid.Cid]bool, len(pending))
	for _, p := range pending {
		if !seen[p.cid] {
			seen[p.cid] = true
			cids = append(cids, p.cid)
		}
	}
	got := make(map[cid.Cid][]byte, len(cids))
	if err := v.c.blocks(ctx, cids, func(c cid.Cid, data []byte) error {
		got[c] = data
		return nil
	}); err != nil {
		return err
	}
	for _, p := range pending {
		p.ev.Record = got[p.cid]
	}
	return nil
}

// sparseLeaves iterates the leaves of a sparse walk as an MST walk would.
func sparseLeaves(leaves []sparseLeaf) func(fn func(key []byte, val cid.Cid) error) error {
	return func(fn func(key []byte, val cid.Cid) error) error {
		for _, l := range leaves {
			if err := fn([]byte(l.key), l.val); err != nil {
				return err
			}
		}
		return nil
	}
}
