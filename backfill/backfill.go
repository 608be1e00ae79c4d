package backfill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/verify"
)

// ErrBusy is returned by Backfill when the same DID is already being
// backfilled.
var ErrBusy = errors.New("backfill: repo is already being backfilled")

// Backfill brings one repo into the store now and returns when it is done.
//
// It returns nil when the repo's records match its PDS and its rev and data
// CID are written (and, if set, OnBackfilled succeeded). Otherwise the
// outcome is recorded on the repo and returned: ErrRepoNotFound (records
// removed, state deleted), an *InactiveError (state recorded, not retried),
// ErrNotTracked (the filter does not track it: records and state removed),
// or an *Error for a failure, retried at Error.Retry. If ctx ends, ctx's
// error is returned and nothing is recorded: the repo stays queued. A DID
// unknown to the store is given a repo state.
func (s *Scheduler) Backfill(ctx context.Context, did string) error {
	if !s.claim(did) {
		return ErrBusy
	}
	defer s.unclaim(did)
	err, _ := s.run(ctx, did)
	return err
}

// run backfills a claimed repo, records the outcome, and reports whether a
// failure could not be recorded.
func (s *Scheduler) run(ctx context.Context, did string) (err error, unrecorded bool) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	err = s.backfill(ctx, did)
	var fl *failure
	switch {
	case err == nil:
		s.completed.Add(1)
		return nil, false
	case errors.As(err, &fl) && ctx.Err() == nil:
		rerr := s.recordFailure(ctx, did, fl)
		if errors.Is(rerr, errStale) {
			return nil, false
		}
		var be *Error
		if !errors.As(rerr, &be) {
			s.opts.Logger.Error("backfill: recording failure", "did", did, "kind", fl.kind, "cause", fl.err, "err", rerr)
			return rerr, true
		}
		return rerr, false
	case errors.Is(err, errStale):
		return nil, false
	case errors.Is(err, ErrRepoNotFound), errors.Is(err, ErrRepoInactive), errors.Is(err, ErrNotTracked):
		s.completed.Add(1)
		return err, false
	case ctx.Err() != nil:
		return ctx.Err(), false
	default:
		s.failed.Add(1)
		s.opts.Logger.Error("backfill failed", "did", did, "err", err)
		return fmt.Errorf("backfill %s: %w", did, err), !errors.Is(err, errGone)
	}
}

// backfill is one attempt. Failures are *failure; outcomes are the
// sentinel errors; other errors come from the store or the writer.
func (s *Scheduler) backfill(ctx context.Context, did string) (err error) {
	d, err := syntax.ParseDID(did)
	if err != nil {
		return fail(KindInvalid, "%w", err)
	}
	var cur *store.Repo
	err = s.opts.Store.View(ctx, func(tx store.ReadTx) error {
		r, err := tx.Repo(did)
		if err == nil {
			cur = r
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	known := cur != nil
	host := ""
	defer func() {
		var fl *failure
		switch {
		case errors.As(err, &fl):
			fl.unknown = !known
			fl.host = host
		case err == nil:
			s.ledger.succeeded(did, host)
		case errors.Is(err, ErrRepoNotFound), errors.Is(err, ErrRepoInactive), errors.Is(err, ErrNotTracked):
			s.ledger.forget(did)
		}
	}()
	f := s.opts.Filter()
	if f.Excluded(did) {
		return s.untrack(ctx, did)
	}

	ident, err := s.opts.Resolver.Resolve(ctx, d)
	if errors.Is(err, resolver.ErrNotFound) {
		return s.deleted(ctx, did, known)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail(KindResolve, "%w", err)
	}
	if ident.PDS == "" {
		return fail(KindResolve, "identity has no PDS endpoint")
	}
	host = hostOf(ident.PDS)
	if u, err := url.Parse(ident.PDS); err == nil {
		if until := s.hosts.pausedUntil(u.Host); !until.IsZero() {
			return &failure{kind: KindRateLimited, until: until, err: fmt.Errorf("%w: %s paused", ErrRateLimited, u.Host)}
		}
	}

	now := s.opts.Now()
	stale := false
	if err := s.opts.Writer.Write(ctx, func(tx store.Tx) error {
		r, err := loadRepo(tx, did)
		if err != nil {
			return err
		}
		switch r.State {
		case store.StatePending, store.StateError, store.StateDesynchronized, store.StateBackfilling, store.StateDeleted, 0:
		default:
			// A queue entry read before the repo was synced or made
			// inactive: nothing to do. (A deleted repo is checked again:
			// someone tracked it anew.)
			stale = true
			return nil
		}
		stale = false
		if err := setIdentity(tx, r, ident, now); err != nil {
			return err
		}
		return repos.MarkBackfilling(tx, r, now)
	}); err != nil {
		return err
	}
	if stale {
		return errStale
	}
	s.checkHandle(did, ident)
	// Read the filter again now that the repo is marked backfilling: a
	// filter change from here on sees that state and queues the repo again,
	// while one made before is in f.
	f = s.opts.Filter()

	explicit := f.Explicit(did) || (cur != nil && cur.Reason == repos.ReasonExplicit)
	needSignal := !f.FullNetwork() && !explicit
	strategy := s.opts.Strategy
	if strategy == StrategyAuto && cur != nil && cur.ErrorKind == KindBlock {
		// The last sparse attempt met a bad or missing block: fetch the
		// repo whole this time.
		strategy = StrategyFull
	}
	if plan, ok := planSparse(f, needSignal, strategy); ok {
		sr, err := s.sparse(ctx, d, ident, plan)
		switch {
		case err == nil:
			if needSignal && !sr.signal {
				return s.untrack(ctx, did)
			}
			if err := s.apply(ctx, did, f, sr.ident, sr.commit, sparseLeaves(sr.leaves), sparseValues{sr.client}); err != nil {
				return err
			}
			s.sparseDone.Add(1)
			return nil
		case errors.Is(err, errNoGetBlocks), errors.Is(err, errTooWide):
			s.fallbacks.Add(1)
		default:
			return s.outcome(ctx, did, known, err)
		}
	}

	c, err := s.fetch(ctx, ident.PDS, did)
	if err != nil {
		return s.outcome(ctx, did, known, err)
	}
	defer c.close()
	s.hostAnswered(ctx, host)

	commit, rp, err := repo.LoadRepoFromCAR(ctx, c.r)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail(KindMalformed, "loading CAR: %w", err)
	}
	if commit.DID != did {
		return fail(KindMalformed, "commit is for %s", commit.DID)
	}
	if rp.MST.IsPartial() {
		return fail(KindMalformed, "CAR lacks MST nodes")
	}
	if s.opts.Verify {
		ident, err = s.verify(ctx, d, ident, commit)
		if err != nil {
			return err
		}
	}

	if needSignal {
		ok, err := hasSignal(rp, f)
		if err != nil {
			return err
		}
		if !ok {
			return s.untrack(ctx, did)
		}
	}
	return s.apply(ctx, did, f, ident, commit, rp.MST.Walk, carValues{rp})
}

// outcome turns the error of a fetch into what the backfill returns: a
// repo the host does not know is deleted, an inactive one recorded as such.
func (s *Scheduler) outcome(ctx context.Context, did string, known bool, err error) error {
	var ie *InactiveError
	switch {
	case errors.Is(err, ErrRepoNotFound):
		return s.deleted(ctx, did, known)
	case errors.As(err, &ie):
		return s.inactive(ctx, did, ie.Status)
	}
	return err
}

// apply diffs the verified commit's keys (walk) against the store, writes
// the differences and the repo's new rev and data CID, and runs
// OnBackfilled.
func (s *Scheduler) apply(ctx context.Context, did string, f *filter.Filter, ident *resolver.Identity,
	commit *repo.Commit, walk walkFunc, values valueSource) error {
	if err := s.diff(ctx, did, f, commit.Rev, walk, values, s.finalize(did, ident, commit)); err != nil {
		return err
	}
	if s.opts.OnBackfilled != nil {
		if err := s.opts.OnBackfilled(ctx, did, commit.Rev, commit.Data); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fail(KindHook, "%w", err)
		}
	}
	return nil
}

// verify checks the commit signature (verify.Signature): with the key of
// ident, and on failure once more with a fresh identity, which it returns.
func (s *Scheduler) verify(ctx context.Context, d syntax.DID, ident *resolver.Identity, commit *repo.Commit) (*resolver.Identity, error) {
	var fresh *resolver.Identity
	key := func(ctx context.Context, refresh bool) (atcrypto.PublicKey, error) {
		if !refresh {
			return ident.SigningKey, nil
		}
		if err := s.opts.Resolver.Purge(ctx, d); err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		id, err := s.opts.Resolver.Resolve(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("signature did not verify, and resolving again failed: %w", err)
		}
		fresh = id
		return id.SigningKey, nil
	}
	if _, err := verify.Signature(ctx, commit, key); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fail(KindVerify, "commit %s: %w", commit.Rev, err)
	}
	if fresh != nil {
		s.checkHandle(d.String(), fresh)
		return fresh, nil
	}
	return ident, nil
}

// checkHandle asks for the handle check of a repo resolved without it.
func (s *Scheduler) checkHandle(did string, ident *resolver.Identity) {
	if ident.Handle == "" && s.opts.CheckHandle != nil {
		s.opts.CheckHandle(did)
	}
}

// finalize returns the write that ends a successful backfill: rev and data
// set, errors cleared; without OnBackfilled, also synced and dequeued.
func (s *Scheduler) finalize(did string, ident *resolver.Identity, commit *repo.Commit) func(tx store.Tx) error {
	now := s.opts.Now()
	hook := s.opts.OnBackfilled != nil
	data := commit.Data.String()
	commitCID := ""
	if c, err := commitCIDOf(commit); err == nil {
		commitCID = c.String()
	}
	return func(tx store.Tx) error {
		r, err := loadRepo(tx, did)
		if err != nil {
			return err
		}
		r.Rev, r.Data, r.Commit = commit.Rev, data, commitCID
		// ident may have been resolved afresh during the attempt (a key
		// rotation), with a handle the claim did not see.
		if err := setIdentity(tx, r, ident, now); err != nil {
			return err
		}
		repos.ClearError(r)
		r.Status = ""
		r.Updated = now
		if !hook {
			return repos.MarkSynced(tx, r, now)
		}
		return tx.PutRepo(r)
	}
}

// deleted removes every record of a repo the network says does not exist,
// marks it deleted, dequeues it and emits an account event (once).
func (s *Scheduler) deleted(ctx context.Context, did string, known bool) error {
	now := s.opts.Now()
	// A repo untracked while this attempt resolved it is not the
	// attempt's to delete (Untrack may have kept its records on purpose).
	err := s.deleteAll(ctx, did, known, func(tx store.Tx) error {
		r, err := loadRepo(tx, did)
		if err != nil {
			return err
		}
		return repos.MarkInactive(tx, r, "deleted", now)
	})
	if errors.Is(err, errGone) {
		return errStale
	}
	if err != nil {
		return err
	}
	return ErrRepoNotFound
}

// inactive records an inactive account: state and status set, dequeued, an
// account event emitted unless the status was already recorded. Records
// are kept.
func (s *Scheduler) inactive(ctx context.Context, did, status string) error {
	now := s.opts.Now()
	err := s.opts.Writer.Write(ctx, func(tx store.Tx) error {
		r, err := trackedRepo(tx, did)
		if err != nil {
			return err
		}
		if r == nil {
			return tx.Dequeue(did) // untracked meanwhile: not to be brought back
		}
		return repos.MarkInactive(tx, r, status, now)
	})
	if err != nil {
		return err
	}
	return &InactiveError{DID: did, Status: status}
}

// untrack removes every record of a repo the filter does not track (with
// delete events), then its state and queue entry.
func (s *Scheduler) untrack(ctx context.Context, did string) error {
	if err := s.deleteAll(ctx, did, false, func(tx store.Tx) error { return tx.DeleteRepo(did) }); err != nil {
		return err
	}
	return ErrNotTracked
}

// recordFailure writes a failure on the repo and queues it again: after a
// backoff counted in Retries, or, for a rate limit, when the host's pause
// ends, without counting a retry.
func (s *Scheduler) recordFailure(ctx context.Context, did string, fl *failure) error {
	now := s.opts.Now()
	jitter := randJitter()
	var next time.Time
	gone := false
	err := s.opts.Writer.Write(ctx, func(tx store.Tx) error {
		r, err := trackedRepo(tx, did)
		if err != nil {
			return err
		}
		switch {
		case r == nil && fl.unknown:
			r = &store.Repo{DID: did, State: store.StatePending} // never tracked: a direct Backfill
		case r == nil:
			gone = true // untracked meanwhile: not to be brought back
			return nil
		case r.State != store.StateBackfilling && r.State != store.StatePending &&
			r.State != store.StateError && r.State != store.StateDesynchronized:
			gone = true // deleted, made inactive or synced meanwhile
			return nil
		}
		gone = false
		switch fl.kind {
		case KindRateLimited:
			next = fl.until
			return repos.MarkDeferred(tx, r, fl.kind, fl.err.Error(), next, now)
		case KindTooLarge, KindInvalid:
			next = now.Add(backoff(s.opts.MaxBackoff, s.opts.MaxBackoff, 1, jitter))
		default:
			next = now.Add(backoff(s.opts.MinBackoff, s.opts.MaxBackoff, r.Retries+1, jitter))
		}
		return repos.MarkFailed(tx, r, fl.kind, fl.err.Error(), next, now)
	})
	if err != nil {
		return err
	}
	if gone {
		s.ledger.forget(did)
		return errStale
	}
	if fl.kind == KindRateLimited {
		s.ledger.rateLimited(fl.host)
	} else {
		s.ledger.failed(Failure{DID: did, Host: fl.host, Kind: fl.kind, Message: fl.err.Error(), At: now, Retry: next})
	}
	if hostFailure(fl.kind) {
		s.recovery.failedOn(fl.host, did)
	}
	if fl.kind == KindRateLimited {
		s.deferred.Add(1)
	} else {
		s.failed.Add(1)
		s.opts.Logger.Warn("backfill failed", "did", did, "kind", fl.kind, "err", fl.err, "retry", next)
	}
	return &Error{DID: did, Kind: fl.kind, Retry: next, Err: fl.err}
}

// trackedRepo returns a copy of the repo's state, or nil if the repo is not
// tracked (any more).
func trackedRepo(tx store.ReadTx, did string) (*store.Repo, error) {
	r, err := tx.Repo(did)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c := *r
	return &c, nil
}

// loadRepo returns a copy of the repo's state, or a new one.
func loadRepo(tx store.ReadTx, did string) (*store.Repo, error) {
	r, err := trackedRepo(tx, did)
	if r == nil && err == nil {
		r = &store.Repo{DID: did, State: store.StatePending}
	}
	return r, err
}

// setIdentity copies ident onto r. A handle that differs from the one r
// held is also written to tx as an identity event, as the live path does
// for an #identity: a change it missed (or failed to apply) is not lost. A
// handle not checked yet (empty) leaves r's as it is: the check writes it.
func setIdentity(tx store.Tx, r *store.Repo, ident *resolver.Identity, now time.Time) error {
	old := r.Handle
	if ident.Handle != "" {
		r.Handle = ident.Handle.String()
	}
	r.PDS = ident.PDS
	if ident.SigningKey != nil {
		r.SigningKey = ident.SigningKey.Multibase()
	}
	if old == "" || old == r.Handle {
		return nil
	}
	return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: r.DID, Time: now, Handle: r.Handle})
}

// hasSignal reports whether the repo holds a key in a signal collection.
func hasSignal(rp *repo.Repo, f *filter.Filter) (bool, error) {
	found := false
	errStop := errors.New("stop")
	var ks keySplitter
	err := rp.MST.Walk(func(key []byte, _ cid.Cid) error {
		coll, _, ok := ks.split(key)
		if ok && f.IsSignal(coll) {
			found = true
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, fail(KindMalformed, "walking MST: %w", err)
	}
	return found, nil
}

// commitCIDOf computes the CID of a signed commit from its canonical
// DAG-CBOR encoding, which is how the repo's CAR names it.
func commitCIDOf(c *repo.Commit) (cid.Cid, error) {
	var buf bytes.Buffer
	if err := c.MarshalCBOR(&buf); err != nil {
		return cid.Undef, err
	}
	return cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(buf.Bytes())
}
