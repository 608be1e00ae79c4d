package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/firehose"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/verify"
)

// HandleMessage applies one firehose message from source src. It runs on the dispatcher's
// worker for the message's repo, so messages of one repo come in order.
func (in *Ingest) HandleMessage(ctx context.Context, src string, m *firehose.Message) error {
	if in.log.Enabled(ctx, slog.LevelDebug) {
		in.log.Debug("firehose message", "seq", m.Seq, "kind", m.Kind, "did", m.DID)
	}
	// A rejected commit is an outcome (the repo is marked for resync); any
	// other failure (the store, the resolver) is retried, so that the
	// cursor does not pass a message that was not applied. If it still
	// fails, the repo is queued for a resync, which brings whatever the
	// message said.
	var err error
	for attempt, wait := 0, 50*time.Millisecond; ; attempt, wait = attempt+1, wait*2 {
		switch m.Kind {
		case firehose.KindCommit:
			err = in.handleCommit(ctx, src, m)
		case firehose.KindSync:
			err = in.handleSync(ctx, m.Sync)
		case firehose.KindIdentity:
			err = in.handleIdentity(ctx, m.Identity)
		case firehose.KindAccount:
			err = in.handleAccount(ctx, m.Account)
		}
		var ce *verify.CommitError
		if err == nil || errors.As(err, &ce) || attempt == 4 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	if err == nil {
		return nil
	}
	in.log.Warn("firehose message not applied", "source", src, "seq", m.Seq, "kind", m.Kind, "did", m.DID, "err", err)
	var ce *verify.CommitError
	if !errors.As(err, &ce) && m.DID != "" && ctx.Err() == nil {
		if rerr := in.repos.ResyncTracked(ctx, m.DID); rerr != nil {
			in.log.Error("could not queue a resync after a failed firehose message", "did", m.DID, "err", rerr)
		}
	}
	return err
}

// touchesSignal reports whether a commit writes a record in a signal
// collection.
func touchesSignal(f *filter.Filter, msg *comatproto.SyncSubscribeRepos_Commit) bool {
	for _, op := range msg.Ops {
		if op.Action == "delete" {
			continue
		}
		if coll, _, err := syntax.ParseRepoPath(op.Path); err == nil && f.IsSignal(coll.String()) {
			return true
		}
	}
	return false
}

func (in *Ingest) handleCommit(ctx context.Context, src string, m *firehose.Message) error {
	msg := m.Commit
	did := msg.Repo
	if _, err := syntax.ParseDID(did); err != nil {
		in.metrics.rejected(verify.RejectMalformed)
		in.recent.rejected(did, msg.Rev, verify.RejectMalformed, err)
		return verify.Reject(did, msg.Rev, verify.RejectMalformed, "repo: %w", err)
	}
	f := in.cfg.Filter()
	if f.Excluded(did) {
		return nil
	}
	unlock := in.repos.LockLive(did)
	defer unlock()

	if in.pipe.Broken(did) {
		// A queued write of this repo failed and its resync is not queued
		// yet: hold the commit for after the resync, as during a backfill.
		return in.hold(ctx, bufferOf(src, m))
	}
	r := in.pipe.Repo(did)
	var err error
	if r == nil {
		r, err = in.repos.Get(ctx, did)
	}
	if errors.Is(err, store.ErrNotFound) {
		reason := ""
		switch {
		case f.Explicit(did):
			reason = repos.ReasonExplicit
		case f.FullNetwork():
			reason = repos.ReasonNetwork
		case touchesSignal(f, msg):
			reason = repos.ReasonSignal
		default:
			return nil
		}
		// Discovery: track it, holding this commit for after the backfill.
		return in.repos.Discover(ctx, did, reason, bufferOf(src, m))
	}
	if err != nil {
		return err
	}
	if in.cfg.HostAuthority && movedPDS(r.PDS, src) {
		// Not the repo's host (the account moved, or another host speaks
		// for it): ignored. A move is followed by a resync from the new
		// host (handleIdentity), which brings what it wrote.
		in.log.Debug("commit from a host the DID document does not name; ignored", "did", did, "source", src, "pds", r.PDS)
		in.metrics.notAuthoritative.Inc()
		return nil
	}
	switch {
	case !r.State.Active():
		return nil // commits of inactive accounts are not applied
	case r.State != store.StateSynced:
		return in.hold(ctx, bufferOf(src, m))
	}
	in.held.forget(did)
	return in.applyLive(ctx, r, msg, bufferOf(src, m))
}

func bufferOf(src string, m *firehose.Message) *store.BufferedCommit {
	return &store.BufferedCommit{DID: m.Commit.Repo, Rev: m.Commit.Rev, Seq: m.Seq, Source: src, Data: m.Body}
}

// applyCommit verifies a commit against the synced repo r and applies it in
// one transaction: records, events, the repo's rev and data. A stale rev is
// skipped quietly (applied false, nil). A rejected commit marks the repo
// desynchronized and queues a resync; its *verify.CommitError is returned. bc is
// the commit as it is (fromBuffer) or would be buffered: a commit from the
// buffer is removed from it in the same transaction, and a live commit
// whose repo started a resync meanwhile is buffered instead. The caller
// holds the repo's lock. applyCommit returns once the transaction
// committed; applyLive is its pipelined form.
func (in *Ingest) applyCommit(ctx context.Context, r *store.Repo, msg *comatproto.SyncSubscribeRepos_Commit, bc *store.BufferedCommit, fromBuffer bool) (bool, error) {
	vc, err := in.verifyLive(ctx, r, msg, bc, fromBuffer)
	if vc == nil {
		return false, err
	}
	applied := false
	if err := in.write(ctx, in.commitWrite(r, vc, bc, fromBuffer, &applied)); err != nil {
		return false, err
	}
	if applied {
		in.metrics.applied(len(vc.Ops))
		in.recent.ops.Add(int64(len(vc.Ops)))
	}
	return applied, nil
}

// applyLive is applyCommit for a live commit of a synced repo, without
// waiting for the commit: the write is queued, the state it leaves the
// repo in is remembered (see pipeline) so that the repo's next commit is
// verified against it, and applyLive returns. The writer commits queued
// writes in order, so a cursor saved after applyLive returned is never
// committed before the commit's write. If the write fails, the repo is
// resynced. The caller holds the repo's lock.
func (in *Ingest) applyLive(ctx context.Context, r *store.Repo, msg *comatproto.SyncSubscribeRepos_Commit, bc *store.BufferedCommit) error {
	vc, err := in.verifyLive(ctx, r, msg, bc, false)
	if vc == nil {
		return err
	}
	applied := false
	did := r.DID
	in.pipe.Queued(did, advance(vc, *r, time.Now()))
	err = in.w.Submit(ctx, in.commitWrite(r, vc, bc, false, &applied), func(err error) {
		// On the writer's goroutine: no blocking here.
		if err != nil && !errors.Is(err, writer.ErrClosed) {
			in.pipe.Fail(did) // before done: see repos.Pipeline.Fail
		}
		in.pipe.Done(did)
		switch {
		case err == nil:
			if applied {
				in.metrics.applied(len(vc.Ops))
				in.recent.ops.Add(int64(len(vc.Ops)))
			}
		case errors.Is(err, writer.ErrClosed):
			// Stopping: the cursor saved last is behind this commit.
		default:
			in.liveWriteFailed(did, vc.Rev, err)
		}
	})
	if err != nil {
		in.pipe.Done(did)
		if errors.Is(err, writer.ErrClosed) {
			return writer.ErrClosed
		}
		return err
	}
	return nil
}

// liveWriteFailed handles a pipelined live write that did not commit (a
// store error): the repo is resynced, so that what the commit said is
// fetched again. It runs on the writer's goroutine and only starts work.
//
// Until the resync is queued, firehose cursors are not saved (see follow):
// a cursor committed past the failed commit, then a crash, would leave the
// repo synced without it. If the process stops first, the cursor saved
// last is behind the commit, which comes again.
func (in *Ingest) liveWriteFailed(did, rev string, err error) {
	in.log.Warn("live commit not stored; resyncing repo", "did", did, "rev", rev, "err", err)
	if in.ctx.Err() != nil {
		return
	}
	in.bg.Add(1)
	go func() {
		defer in.bg.Done()
		for {
			rerr := in.repos.ResyncTracked(in.ctx, did)
			if rerr == nil {
				in.pipe.Recovered(did)
				return
			}
			if in.ctx.Err() != nil {
				return
			}
			in.log.Error("could not queue a resync after a failed live write; cursors held, retrying", "did", did, "err", rerr)
			select {
			case <-in.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

// verifyLive checks msg against r for applyCommit and applyLive. It
// returns the verified commit, or nil with nil for a stale commit (removed
// from the buffer if it came from there) or nil with the error; a rejected
// commit marks the repo desynchronized.
func (in *Ingest) verifyLive(ctx context.Context, r *store.Repo, msg *comatproto.SyncSubscribeRepos_Commit, bc *store.BufferedCommit, fromBuffer bool) (*verify.Commit, error) {
	if r.Rev != "" && msg.Rev <= r.Rev {
		in.metrics.skipped()
		if fromBuffer {
			return nil, in.write(ctx, func(tx store.Tx) error { return tx.DeleteBuffer(bc.DID, bc.Rev) })
		}
		return nil, nil
	}
	vc, err := verify.CheckCommit(ctx, msg, r.Data, in.keyFor(r), in.cfg.FullVerify, time.Now())
	if err != nil {
		var ce *verify.CommitError
		if errors.As(err, &ce) {
			in.metrics.rejected(ce.Reason)
			in.recent.rejected(ce.DID, ce.Rev, ce.Reason, ce.Err)
			in.log.Warn("commit rejected; resyncing repo", "did", ce.DID, "rev", ce.Rev, "reason", ce.Reason, "err", ce.Err)
			if werr := in.repos.MarkDesync(ctx, r.DID, ce); werr != nil {
				return nil, werr
			}
		}
		return nil, err
	}
	return vc, nil
}

// commitWrite returns the write of a verified commit: records and events
// for the stored collections, then the repo's rev, data and commit, and
// the signing key if checking the commit resolved a new one. It
// sets *applied to whether the commit was applied (rather than buffered
// because the repo left the synced state r described).
func (in *Ingest) commitWrite(r *store.Repo, vc *verify.Commit, bc *store.BufferedCommit, fromBuffer bool, applied *bool) func(tx store.Tx) error {
	f := in.cfg.Filter()
	return func(tx store.Tx) error {
		*applied = false
		now := time.Now()
		cur, err := tx.Repo(r.DID)
		if err != nil {
			return err
		}
		if fromBuffer {
			if err := tx.DeleteBuffer(bc.DID, bc.Rev); err != nil {
				return err
			}
		} else if cur.State != store.StateSynced || cur.Rev != r.Rev {
			// The repo changed state since we looked (a resync started):
			// hold the commit for after it.
			return tx.PutBuffer(bc)
		}
		for _, op := range vc.Ops {
			if !f.Stores(op.Collection) {
				continue
			}
			ev := &store.Event{Kind: store.KindRecord, Live: true, DID: r.DID, Rev: vc.Rev, Time: now,
				Collection: op.Collection, RKey: op.RKey}
			switch op.Action {
			case "create", "update":
				ev.Action, ev.CID, ev.Record = store.ActionUpdate, op.CID.Bytes(), op.Value
				old, err := tx.Record(r.DID, op.Collection, op.RKey)
				if errors.Is(err, store.ErrNotFound) {
					ev.Action = store.ActionCreate
				} else if err != nil {
					return err
				} else if string(old.CID) == string(ev.CID) {
					continue
				}
			case "delete":
				if _, err := tx.Record(r.DID, op.Collection, op.RKey); errors.Is(err, store.ErrNotFound) {
					continue
				} else if err != nil {
					return err
				}
				ev.Action = store.ActionDelete
			}
			if err := store.WriteRecordChange(tx, ev); err != nil {
				return err
			}
		}
		*applied = true
		return tx.PutRepo(advance(vc, *cur, now))
	}
}

// keyFor returns the signing key lookup for a repo: the key cached on the
// repo, or a fresh resolution when asked. A fresh key that verifies a
// commit is saved on the repo by the commit's write (see
// verify.Commit.SigningKey), so that the next commit finds it cached.
func (in *Ingest) keyFor(r *store.Repo) verify.KeyFunc {
	return func(ctx context.Context, refresh bool) (atcrypto.PublicKey, error) {
		if !refresh && r.SigningKey != "" {
			if k, err := in.keys.parse(r.SigningKey); err == nil {
				return k, nil
			}
		}
		did, err := syntax.ParseDID(r.DID)
		if err != nil {
			return nil, err
		}
		if refresh {
			if err := in.res.Purge(ctx, did); err != nil {
				return nil, err
			}
		}
		id, err := in.res.Resolve(ctx, did)
		if err != nil {
			return nil, err
		}
		if id.SigningKey == nil {
			return nil, fmt.Errorf("%s has no signing key", did)
		}
		return id.SigningKey, nil
	}
}

// Drain is the backfill's OnBackfilled hook: it applies the live commits
// buffered while the repo backfilled, in rev order, skipping those at or
// below the backfilled rev, then marks the repo synced and dequeues it, all
// under the repo's lock so that no live commit slips between.
func (in *Ingest) Drain(ctx context.Context, did string, rev string, data cid.Cid) error {
	unlock := in.repos.Lock(did)
	defer unlock()
	for {
		var page []*store.BufferedCommit
		err := in.st.View(ctx, func(tx store.ReadTx) error {
			return tx.ScanBuffer(did, func(c *store.BufferedCommit) (bool, error) {
				page = append(page, c)
				return len(page) < 64, nil
			})
		})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, bc := range page {
			r, err := in.repos.Get(ctx, did)
			if errors.Is(err, store.ErrNotFound) || err == nil && r.State != store.StateBackfilling {
				return nil // untracked, deleted or made inactive meanwhile: not ours to finish
			}
			if err != nil {
				return err
			}
			m, err := firehose.DecodeBody(firehose.KindCommit, bc.Data)
			if err != nil || m.Commit == nil || m.Commit.Repo != did {
				in.metrics.rejected(verify.RejectMalformed)
				in.recent.rejected(did, bc.Rev, verify.RejectMalformed, fmt.Errorf("held commit does not decode as this repo's commit: %v", err))
				if err := in.write(ctx, func(tx store.Tx) error { return tx.DeleteBuffer(did, bc.Rev) }); err != nil {
					return err
				}
				continue
			}
			live := *r
			live.State = store.StateSynced
			if _, err := in.applyCommit(ctx, &live, m.Commit, bc, true); err != nil {
				var ce *verify.CommitError
				if errors.As(err, &ce) {
					// Marked desynchronized and queued again. The bad
					// commit goes: the resync fetches the true state, and
					// kept, it would be rejected after every backfill.
					return in.write(ctx, func(tx store.Tx) error { return tx.DeleteBuffer(did, bc.Rev) })
				}
				return err
			}
		}
	}
	return in.repos.FinishBackfill(ctx, did)
}

func (in *Ingest) handleSync(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Sync) error {
	did := msg.Did
	if _, err := syntax.ParseDID(did); err != nil {
		return err
	}
	f := in.cfg.Filter()
	if f.Excluded(did) {
		return nil
	}
	unlock := in.repos.Lock(did)
	defer unlock()
	r, err := in.repos.Get(ctx, did)
	if errors.Is(err, store.ErrNotFound) {
		if f.FullNetwork() || f.Explicit(did) {
			reason := repos.ReasonNetwork
			if f.Explicit(did) {
				reason = repos.ReasonExplicit
			}
			return in.repos.Track(ctx, did, reason)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if r.Rev != "" && msg.Rev <= r.Rev {
		return nil
	}
	if r.State != store.StateSynced {
		if !r.State.Active() {
			return nil
		}
		// Queued or backfilling: the CAR being fetched may predate this
		// state. Remember the rev, so that a backfill ending below it is
		// done again (see drain).
		return in.repos.NoteSyncRev(ctx, did, msg.Rev)
	}
	commit, err := verify.CheckSync(ctx, msg, in.keyFor(r), in.cfg.FullVerify)
	if err != nil {
		var ce *verify.CommitError
		if errors.As(err, &ce) {
			in.metrics.rejected(ce.Reason)
			in.recent.rejected(ce.DID, ce.Rev, ce.Reason, ce.Err)
			if werr := in.repos.MarkDesync(ctx, did, ce); werr != nil {
				return werr
			}
		}
		return err
	}
	if commit.Data.String() == r.Data {
		return in.repos.AdvanceRev(ctx, did, r.Rev, commit.Rev)
	}
	return in.repos.MarkDesync(ctx, did, &verify.CommitError{DID: did, Rev: msg.Rev, Reason: verify.RejectBrokenChain,
		Err: fmt.Errorf("#sync data %s differs from stored %s", commit.Data, r.Data)})
}

func (in *Ingest) handleIdentity(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Identity) error {
	did, err := syntax.ParseDID(msg.Did)
	if err != nil {
		return err
	}
	unlock := in.repos.Lock(msg.Did)
	defer unlock()
	if err := in.res.Purge(ctx, did); err != nil {
		return err
	}
	r, err := in.repos.Get(ctx, msg.Did)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	id, err := in.res.Resolve(ctx, did)
	if err != nil {
		return fmt.Errorf("resolve %s after #identity: %w", did, err)
	}
	key := ""
	if id.SigningKey != nil {
		key = id.SigningKey.Multibase()
	}
	if err := in.repos.SetIdentity(ctx, r.DID, id.Handle.String(), id.PDS, key); err != nil {
		return err
	}
	if id.Handle == "" && in.cfg.CheckHandle != nil {
		in.cfg.CheckHandle(r.DID, true)
	}
	if movedPDS(r.PDS, id.PDS) && r.State.Active() {
		// The account migrated: its repo now lives on the new host, which
		// may hold commits the old one never announced. Fetch it from
		// there.
		in.log.Info("account moved to another PDS; resyncing from it", "did", r.DID, "from", r.PDS, "to", id.PDS)
		_, err := in.repos.Resync(ctx, r.DID)
		return err
	}
	return nil
}

// movedPDS reports whether a DID document now names another PDS host than
// the one known (an empty known PDS is no move).
func movedPDS(known, now string) bool {
	if known == "" || now == "" {
		return false
	}
	a, errA := url.Parse(known)
	b, errB := url.Parse(now)
	if errA != nil || errB != nil {
		return known != now
	}
	return !strings.EqualFold(a.Host, b.Host)
}

func (in *Ingest) handleAccount(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Account) error {
	did := msg.Did
	if _, err := syntax.ParseDID(did); err != nil {
		return err
	}
	unlock := in.repos.Lock(did)
	defer unlock()
	r, err := in.repos.Get(ctx, did)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	status := ""
	if msg.Status != nil {
		status = *msg.Status
	}
	now := time.Now()
	if msg.Active {
		if r.State.Active() {
			return nil
		}
		if r.State == store.StateDeleted {
			return nil
		}
		// Reactivated: emit, and resync in case the repo changed meanwhile.
		return in.repos.Reactivate(ctx, did, now)
	}
	state, known := repos.InactiveState(status)
	if !known {
		// desynchronized, throttled and unknown statuses: the host's
		// problem, not the account's; say so without changing state.
		return in.repos.AccountStatus(ctx, did, status, now)
	}
	if r.State == state && r.Status == status {
		return nil
	}
	if state == store.StateDeleted {
		// State first, without the status (see repos.Table.BeginDelete).
		if err := in.repos.BeginDelete(ctx, did, now); err != nil {
			return err
		}
		if _, err := repos.DeleteRecords(ctx, in.st, in.cfg.Write, did, repos.DeleteOptions{Live: true}); err != nil {
			return err
		}
	}
	return in.repos.SetInactive(ctx, did, state, status, now)
}

// advance returns r moved to the verified commit: its rev, data and commit,
// and the signing key if one was resolved afresh.
func advance(vc *verify.Commit, r store.Repo, now time.Time) *store.Repo {
	r.Rev, r.Data, r.Commit, r.Updated = vc.Rev, vc.Data.String(), vc.CID.String(), now
	if vc.SigningKey != "" {
		r.SigningKey = vc.SigningKey
	}
	return &r
}
