package cistern

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/firehose"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/store"
)

// firehoseQueue sizes the dispatcher's global bound on messages accepted
// but not yet applied: FirehoseWorkers × (firehoseQueue+1) in all, from any
// mix of repos.
const firehoseQueue = 4

// follow runs one firehose source until ctx ends: frames are dispatched to
// workers by repo, and the cursor watermark is saved every CursorInterval
// and on the way out.
func (ix *Indexer) follow(ctx context.Context, src string) error {
	cursorKey := metaCursorPrefix + src
	var cursor int64
	err := ix.st.View(ctx, func(tx store.ReadTx) error {
		v, err := tx.Meta(cursorKey)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		cursor, err = strconv.ParseInt(string(v), 10, 64)
		return err
	})
	if err != nil {
		return fmt.Errorf("read cursor: %w", err)
	}
	if cursor == 0 {
		// No cursor: this source starts live. Repos synced before (in a run
		// that saw no message of this source) may have missed commits made
		// since: resync them. The diff emits only what changed.
		if err := ix.resyncAll(ctx); err != nil {
			return fmt.Errorf("resync before a first live start: %w", err)
		}
	}
	client, err := firehose.New(firehose.Options{
		URL:          src,
		Name:         src,
		HTTPClient:   ix.cfg.HTTPClient,
		Logger:       ix.log,
		MaxFrameSize: ix.cfg.FirehoseMaxFrameSize,
		OnInfo: func(info *comatproto.SyncSubscribeRepos_Info) {
			if info.Name == firehose.NameOutdatedCursor {
				// Messages between our cursor and the oldest the source
				// still has are gone: every synced repo may have missed
				// commits, so each is resynced (the diff emits only what
				// changed).
				ix.log.Warn("firehose cursor is older than the source's history; resyncing every synced repo", "source", src, "cursor", cursor)
				if err := ix.resyncAll(ctx); err != nil && ctx.Err() == nil {
					ix.log.Error("resync after outdated cursor", "source", src, "err", err)
				}
			}
		},
	})
	if err != nil {
		return err
	}
	disp := firehose.NewDispatcher(ix.cfg.FirehoseWorkers, firehoseQueue, func(ctx context.Context, m *firehose.Message) error {
		return ix.handleMessage(ctx, src, m)
	})

	// The dispatcher's workers must finish their messages even as ctx
	// ends, so that the last watermark is saved; they get their own
	// context, cancelled once the client stopped feeding them.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		disp.Run(workCtx)
	}()
	var saveMu sync.Mutex
	saved := cursor
	saveAt := func(c context.Context, wm int64) error {
		saveMu.Lock()
		defer saveMu.Unlock()
		if wm <= saved {
			return nil
		}
		held := false
		if err := ix.write(c, func(tx store.Tx) error {
			// A pipelined live write that failed and whose repo is not yet
			// queued for a resync: the cursor must not pass it durably.
			// (Its failure is counted before this closure runs again in
			// the same batch: the writer reports a failed write first.)
			if held = ix.pipe.anyBroken(); held {
				return nil
			}
			return tx.PutMeta(cursorKey, []byte(strconv.FormatInt(wm, 10)))
		}); err != nil {
			return err
		}
		if held {
			return nil
		}
		saved = wm
		ix.metrics.setCursor(src, wm)
		return nil
	}
	save := func(c context.Context) {
		if err := saveAt(c, disp.Watermark()); err != nil {
			ix.log.Warn("save firehose cursor", "source", src, "err", err)
		}
	}
	started := cursor != 0
	clientDone := make(chan struct{})
	go func() {
		defer wg.Done()
		t := time.NewTicker(ix.cfg.CursorInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				save(workCtx)
			case <-clientDone:
				return
			}
		}
	}()
	handle := func(ctx context.Context, m *firehose.Message) error {
		ix.metrics.observeFrame(src, m)
		if !started && m.Seq > 0 {
			// Anchor the live start at once, so that a restart, however
			// soon, resumes here rather than live again.
			if err := saveAt(ctx, m.Seq-1); err != nil {
				return fmt.Errorf("save the first firehose cursor: %w", err)
			}
			started = true
		}
		return disp.Dispatch(ctx, m)
	}
	var runErr error
	for from := cursor; ; {
		runErr = client.Run(ctx, from, handle)
		if !errors.Is(runErr, firehose.ErrFrameTooLarge) || ctx.Err() != nil {
			break
		}
		ix.metrics.rejected(RejectTooLarge)
		// The source would send the same frame again: go on after it. Its
		// repo is resynced when its next commit does not chain (the
		// frame's repo is unknown: it was not read). Sequence numbers may
		// have gaps: if the frame is further on, the next pass skips the
		// next number, and so on.
		if last := max(client.Stats().LastSeq, from); last > 0 {
			from = last + 1
			ix.log.Error("firehose frame over the size limit skipped", "source", src, "seq", from, "err", runErr)
			continue
		}
		// Live start, nothing received yet: no number to skip to. Connect
		// live again a little later, past that frame.
		ix.log.Error("firehose frame over the size limit at a live start; reconnecting live", "source", src, "err", runErr)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	close(clientDone)
	disp.Wait(workCtx)
	stopWork()
	wg.Wait()
	save(context.Background())
	if ctx.Err() != nil {
		return nil
	}
	if errors.Is(runErr, firehose.ErrFutureCursor) {
		// The source's sequence is behind our cursor: it was reset, or
		// another service answers at its address. Our cursor means nothing
		// there: forget it and start live again, which resyncs every
		// synced repo (see above), so nothing it holds is missed.
		ix.log.Warn("firehose source is behind our cursor; starting live again and resyncing", "source", src, "cursor", saved)
		if err := ix.write(ctx, func(tx store.Tx) error {
			return tx.PutMeta(cursorKey, []byte("0"))
		}); err != nil {
			return fmt.Errorf("forget the cursor after FutureCursor: %w", err)
		}
		return errRestartLive
	}
	return runErr
}

// errRestartLive asks followSource to follow the source again, from its
// live tip.
var errRestartLive = errors.New("cistern: follow the source again from live")

// followSource follows one source until ctx ends, starting it again when
// follow asks (see errRestartLive).
// Restarts are spaced by at least a second, doubling up to a minute while
// they keep coming, since each resyncs every synced repo.
func (ix *Indexer) followSource(ctx context.Context, src string) error {
	wait := time.Second
	for {
		err := ix.follow(ctx, src)
		if !errors.Is(err, errRestartLive) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// handleMessage applies one firehose message. It runs on the dispatcher's
// worker for the message's repo, so messages of one repo come in order.
func (ix *Indexer) handleMessage(ctx context.Context, src string, m *firehose.Message) error {
	if ix.log.Enabled(ctx, slog.LevelDebug) {
		ix.log.Debug("firehose message", "seq", m.Seq, "kind", m.Kind, "did", m.DID)
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
			err = ix.handleCommit(ctx, src, m)
		case firehose.KindSync:
			err = ix.handleSync(ctx, m.Sync)
		case firehose.KindIdentity:
			err = ix.handleIdentity(ctx, m.Identity)
		case firehose.KindAccount:
			err = ix.handleAccount(ctx, m.Account)
		}
		var ce *CommitError
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
	ix.log.Warn("firehose message not applied", "source", src, "seq", m.Seq, "kind", m.Kind, "did", m.DID, "err", err)
	var ce *CommitError
	if !errors.As(err, &ce) && m.DID != "" && ctx.Err() == nil {
		if rerr := ix.resyncTracked(ctx, m.DID); rerr != nil {
			ix.log.Error("could not queue a resync after a failed firehose message", "did", m.DID, "err", rerr)
		}
	}
	return err
}

// resyncTracked queues a resync of a tracked, active repo; untracked repos
// are left alone.
func (ix *Indexer) resyncTracked(ctx context.Context, did string) error {
	unlock := ix.lock(did)
	defer unlock()
	err := ix.write(ctx, func(tx store.Tx) error {
		r, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) || err == nil && !r.State.Active() {
			return nil
		}
		if err != nil {
			return err
		}
		return ix.requeue(tx, r)
	})
	ix.bf.Kick()
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

func (ix *Indexer) handleCommit(ctx context.Context, src string, m *firehose.Message) error {
	msg := m.Commit
	did := msg.Repo
	if _, err := syntax.ParseDID(did); err != nil {
		ix.metrics.rejected(RejectMalformed)
		return reject(did, msg.Rev, RejectMalformed, "repo: %w", err)
	}
	f := ix.Filter()
	if f.Excluded(did) {
		return nil
	}
	unlock := ix.lockLive(did)
	defer unlock()

	if ix.pipe.broken(did) {
		// A queued write of this repo failed and its resync is not queued
		// yet: hold the commit for after the resync, as during a backfill.
		return ix.write(ctx, func(tx store.Tx) error { return tx.PutBuffer(bufferOf(src, m)) })
	}
	r := ix.pipe.repo(did)
	var err error
	if r == nil {
		r, err = ix.repo(ctx, did)
	}
	if errors.Is(err, store.ErrNotFound) {
		reason := ""
		switch {
		case f.Explicit(did):
			reason = reasonExplicit
		case f.FullNetwork():
			reason = reasonNetwork
		case touchesSignal(f, msg):
			reason = reasonSignal
		default:
			return nil
		}
		// Discovery: track it, holding this commit for after the backfill.
		err := ix.write(ctx, func(tx store.Tx) error {
			if _, err := tx.Repo(did); err == nil {
				return tx.PutBuffer(bufferOf(src, m))
			}
			now := time.Now()
			if err := tx.PutRepo(&store.Repo{DID: did, State: store.StatePending, Reason: reason, Updated: now}); err != nil {
				return err
			}
			if err := tx.Enqueue(did, now); err != nil {
				return err
			}
			return tx.PutBuffer(bufferOf(src, m))
		})
		if err == nil {
			ix.bf.Kick()
		}
		return err
	}
	if err != nil {
		return err
	}
	switch {
	case !r.State.Active():
		return nil // commits of inactive accounts are not applied
	case r.State != store.StateSynced:
		return ix.write(ctx, func(tx store.Tx) error { return tx.PutBuffer(bufferOf(src, m)) })
	}
	return ix.applyLive(ctx, r, msg, bufferOf(src, m))
}

func bufferOf(src string, m *firehose.Message) *store.BufferedCommit {
	return &store.BufferedCommit{DID: m.Commit.Repo, Rev: m.Commit.Rev, Seq: m.Seq, Source: src, Data: m.Body}
}

// applyCommit verifies a commit against the synced repo r and applies it in
// one transaction: records, events, the repo's rev and data. A stale rev is
// skipped quietly (applied false, nil). A rejected commit marks the repo
// desynchronized and queues a resync; its *CommitError is returned. bc is
// the commit as it is (fromBuffer) or would be buffered: a commit from the
// buffer is removed from it in the same transaction, and a live commit
// whose repo started a resync meanwhile is buffered instead. The caller
// holds the repo's lock. applyCommit returns once the transaction
// committed; applyLive is its pipelined form.
func (ix *Indexer) applyCommit(ctx context.Context, r *store.Repo, msg *comatproto.SyncSubscribeRepos_Commit, bc *store.BufferedCommit, fromBuffer bool) (bool, error) {
	vc, err := ix.verifyLive(ctx, r, msg, bc, fromBuffer)
	if vc == nil {
		return false, err
	}
	applied := false
	if err := ix.write(ctx, ix.commitWrite(r, vc, bc, fromBuffer, &applied)); err != nil {
		return false, err
	}
	if applied {
		ix.metrics.applied(len(vc.ops))
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
func (ix *Indexer) applyLive(ctx context.Context, r *store.Repo, msg *comatproto.SyncSubscribeRepos_Commit, bc *store.BufferedCommit) error {
	vc, err := ix.verifyLive(ctx, r, msg, bc, false)
	if vc == nil {
		return err
	}
	applied := false
	did := r.DID
	ix.pipe.queued(did, vc.advance(*r, time.Now()))
	err = ix.w.Submit(ctx, ix.commitWrite(r, vc, bc, false, &applied), func(err error) {
		// On the writer's goroutine: no blocking here.
		if err != nil && !errors.Is(err, writer.ErrClosed) {
			ix.pipe.fail(did) // before done: see pipeline.fail
		}
		ix.pipe.done(did)
		switch {
		case err == nil:
			if applied {
				ix.metrics.applied(len(vc.ops))
			}
		case errors.Is(err, writer.ErrClosed):
			// Stopping: the cursor saved last is behind this commit.
		default:
			ix.liveWriteFailed(did, vc.rev, err)
		}
	})
	if err != nil {
		ix.pipe.done(did)
		if errors.Is(err, writer.ErrClosed) {
			return ErrClosed
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
func (ix *Indexer) liveWriteFailed(did, rev string, err error) {
	ix.log.Warn("live commit not stored; resyncing repo", "did", did, "rev", rev, "err", err)
	if ix.ctx.Err() != nil {
		return
	}
	ix.bg.Add(1)
	go func() {
		defer ix.bg.Done()
		for {
			rerr := ix.resyncTracked(ix.ctx, did)
			if rerr == nil {
				ix.pipe.recovered(did)
				return
			}
			if ix.ctx.Err() != nil {
				return
			}
			ix.log.Error("could not queue a resync after a failed live write; cursors held, retrying", "did", did, "err", rerr)
			select {
			case <-ix.ctx.Done():
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
func (ix *Indexer) verifyLive(ctx context.Context, r *store.Repo, msg *comatproto.SyncSubscribeRepos_Commit, bc *store.BufferedCommit, fromBuffer bool) (*verifiedCommit, error) {
	if r.Rev != "" && msg.Rev <= r.Rev {
		ix.metrics.skipped()
		if fromBuffer {
			return nil, ix.write(ctx, func(tx store.Tx) error { return tx.DeleteBuffer(bc.DID, bc.Rev) })
		}
		return nil, nil
	}
	vc, err := checkCommit(ctx, msg, r.Data, ix.keyFor(r), ix.cfg.Verify == VerifyFull, time.Now())
	if err != nil {
		var ce *CommitError
		if errors.As(err, &ce) {
			ix.metrics.rejected(ce.Reason)
			ix.log.Warn("commit rejected; resyncing repo", "did", ce.DID, "rev", ce.Rev, "reason", ce.Reason, "err", ce.Err)
			if werr := ix.markDesync(ctx, r.DID, ce); werr != nil {
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
func (ix *Indexer) commitWrite(r *store.Repo, vc *verifiedCommit, bc *store.BufferedCommit, fromBuffer bool, applied *bool) func(tx store.Tx) error {
	f := ix.Filter()
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
		for _, op := range vc.ops {
			if !f.Stores(op.collection) {
				continue
			}
			ev := &store.Event{Kind: store.KindRecord, Live: true, DID: r.DID, Rev: vc.rev, Time: now,
				Collection: op.collection, RKey: op.rkey}
			switch op.action {
			case "create", "update":
				ev.Action, ev.CID, ev.Record = store.ActionUpdate, op.cid.Bytes(), op.value
				old, err := tx.Record(r.DID, op.collection, op.rkey)
				if errors.Is(err, store.ErrNotFound) {
					ev.Action = store.ActionCreate
				} else if err != nil {
					return err
				} else if string(old.CID) == string(ev.CID) {
					continue
				}
			case "delete":
				if mutantDropDeletes {
					continue
				}
				if _, err := tx.Record(r.DID, op.collection, op.rkey); errors.Is(err, store.ErrNotFound) {
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
		return tx.PutRepo(vc.advance(*cur, now))
	}
}

// keyFor returns the signing key lookup for a repo: the key cached on the
// repo, or a fresh resolution when asked. A fresh key that verifies a
// commit is saved on the repo by the commit's write (see
// verifiedCommit.signingKey), so that the next commit finds it cached.
func (ix *Indexer) keyFor(r *store.Repo) keyFunc {
	return func(ctx context.Context, refresh bool) (atcrypto.PublicKey, error) {
		if !refresh && r.SigningKey != "" {
			if k, err := ix.keys.parse(r.SigningKey); err == nil {
				return k, nil
			}
		}
		did, err := syntax.ParseDID(r.DID)
		if err != nil {
			return nil, err
		}
		if refresh {
			if err := ix.res.Purge(ctx, did); err != nil {
				return nil, err
			}
		}
		id, err := ix.res.Resolve(ctx, did)
		if err != nil {
			return nil, err
		}
		if id.SigningKey == nil {
			return nil, fmt.Errorf("%s has no signing key", did)
		}
		return id.SigningKey, nil
	}
}

// markDesync records that a repo's live chain broke and queues a resync.
func (ix *Indexer) markDesync(ctx context.Context, did string, ce *CommitError) error {
	err := ix.write(ctx, func(tx store.Tx) error {
		r, err := tx.Repo(did)
		if err != nil {
			return err
		}
		next := *r
		next.State = store.StateDesynchronized
		next.Resync = true
		next.ErrorKind = string(ce.Reason)
		next.LastError = ce.Error()
		next.Updated = time.Now()
		if err := tx.PutRepo(&next); err != nil {
			return err
		}
		if err := countReject(tx, ce.Reason); err != nil {
			return err
		}
		return tx.Enqueue(did, time.Now())
	})
	if err == nil {
		ix.bf.Kick()
	}
	return err
}

// countReject adds one to the persisted count of rejections for reason.
func countReject(tx store.Tx, reason RejectReason) error {
	key := metaRejectPrefix + string(reason)
	n := uint64(0)
	if v, err := tx.Meta(key); err == nil && len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	return tx.PutMeta(key, binary.BigEndian.AppendUint64(nil, n+1))
}

// rejectCounts reads the persisted rejection counts.
func rejectCounts(tx store.ReadTx) (map[RejectReason]int64, error) {
	out := map[RejectReason]int64{}
	for _, r := range RejectReasons {
		v, err := tx.Meta(metaRejectPrefix + string(r))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(v) == 8 {
			out[r] = int64(binary.BigEndian.Uint64(v))
		}
	}
	return out, nil
}

// drain is the backfill's OnBackfilled hook: it applies the live commits
// buffered while the repo backfilled, in rev order, skipping those at or
// below the backfilled rev, then marks the repo synced and dequeues it, all
// under the repo's lock so that no live commit slips between.
func (ix *Indexer) drain(ctx context.Context, did string, rev string, data cid.Cid) error {
	unlock := ix.lock(did)
	defer unlock()
	for {
		var page []*store.BufferedCommit
		err := ix.st.View(ctx, func(tx store.ReadTx) error {
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
			r, err := ix.repo(ctx, did)
			if errors.Is(err, store.ErrNotFound) || err == nil && r.State != store.StateBackfilling {
				return nil // untracked, deleted or made inactive meanwhile: not ours to finish
			}
			if err != nil {
				return err
			}
			m, err := firehose.DecodeBody(firehose.KindCommit, bc.Data)
			if err != nil || m.Commit == nil || m.Commit.Repo != did {
				ix.metrics.rejected(RejectMalformed)
				if err := ix.write(ctx, func(tx store.Tx) error { return tx.DeleteBuffer(did, bc.Rev) }); err != nil {
					return err
				}
				continue
			}
			live := *r
			live.State = store.StateSynced
			if _, err := ix.applyCommit(ctx, &live, m.Commit, bc, true); err != nil {
				var ce *CommitError
				if errors.As(err, &ce) {
					// Marked desynchronized and queued again. The bad
					// commit goes: the resync fetches the true state, and
					// kept, it would be rejected after every backfill.
					return ix.write(ctx, func(tx store.Tx) error { return tx.DeleteBuffer(did, bc.Rev) })
				}
				return err
			}
		}
	}
	requeued := false
	err := ix.write(ctx, func(tx store.Tx) error {
		requeued = false
		r, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) {
			return nil // untracked meanwhile
		}
		if err != nil {
			return err
		}
		if r.State != store.StateBackfilling {
			return nil // something else (a rejection, an account event) decided
		}
		next := *r
		if next.SyncRev != "" && next.SyncRev > next.Rev {
			// A #sync announced a newer state than the backfill found:
			// fetch again.
			next.State, next.Resync, next.SyncRev, next.Updated = store.StatePending, true, "", time.Now()
			requeued = true
			if err := tx.PutRepo(&next); err != nil {
				return err
			}
			return tx.Enqueue(did, time.Now())
		}
		next.SyncRev = ""
		next.State = store.StateSynced
		next.Resync = false
		next.ErrorKind, next.LastError, next.Retries, next.NextAttempt = "", "", 0, time.Time{}
		next.Updated = time.Now()
		if err := tx.PutRepo(&next); err != nil {
			return err
		}
		return tx.Dequeue(did)
	})
	if err == nil && requeued {
		ix.bf.Kick()
	}
	return err
}

func (ix *Indexer) handleSync(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Sync) error {
	did := msg.Did
	if _, err := syntax.ParseDID(did); err != nil {
		return err
	}
	f := ix.Filter()
	if f.Excluded(did) {
		return nil
	}
	unlock := ix.lock(did)
	defer unlock()
	r, err := ix.repo(ctx, did)
	if errors.Is(err, store.ErrNotFound) {
		if f.FullNetwork() || f.Explicit(did) {
			reason := reasonNetwork
			if f.Explicit(did) {
				reason = reasonExplicit
			}
			return ix.trackLocked(ctx, did, reason)
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
		return ix.write(ctx, func(tx store.Tx) error {
			cur, err := tx.Repo(did)
			if err != nil || cur.SyncRev >= msg.Rev {
				return err
			}
			next := *cur
			next.SyncRev = msg.Rev
			return tx.PutRepo(&next)
		})
	}
	commit, err := checkSync(ctx, msg, ix.keyFor(r), ix.cfg.Verify == VerifyFull)
	if err != nil {
		var ce *CommitError
		if errors.As(err, &ce) {
			ix.metrics.rejected(ce.Reason)
			if werr := ix.markDesync(ctx, did, ce); werr != nil {
				return werr
			}
		}
		return err
	}
	if commit.Data.String() == r.Data {
		return ix.write(ctx, func(tx store.Tx) error {
			cur, err := tx.Repo(did)
			if err != nil || cur.Rev != r.Rev {
				return err
			}
			next := *cur
			next.Rev = commit.Rev
			return tx.PutRepo(&next)
		})
	}
	return ix.markDesync(ctx, did, &CommitError{DID: did, Rev: msg.Rev, Reason: RejectBrokenChain,
		Err: fmt.Errorf("#sync data %s differs from stored %s", commit.Data, r.Data)})
}

func (ix *Indexer) handleIdentity(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Identity) error {
	did, err := syntax.ParseDID(msg.Did)
	if err != nil {
		return err
	}
	unlock := ix.lock(msg.Did)
	defer unlock()
	if err := ix.res.Purge(ctx, did); err != nil {
		return err
	}
	r, err := ix.repo(ctx, msg.Did)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	id, err := ix.res.Resolve(ctx, did)
	if err != nil {
		return fmt.Errorf("resolve %s after #identity: %w", did, err)
	}
	if id.Handle == "" && ix.handles != nil {
		// Checked beside the live path; the verdict is written with a
		// live identity event if the handle changed.
		defer ix.handles.Request(msg.Did, true)
	}
	return ix.write(ctx, func(tx store.Tx) error {
		cur, err := tx.Repo(r.DID)
		if err != nil {
			return err
		}
		next := *cur
		next.PDS = id.PDS
		if id.Handle != "" {
			next.Handle = id.Handle.String()
		}
		if id.SigningKey != nil {
			next.SigningKey = id.SigningKey.Multibase()
		}
		if err := tx.PutRepo(&next); err != nil {
			return err
		}
		if cur.Handle == next.Handle {
			return nil
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, Live: true, DID: r.DID, Time: time.Now(), Handle: next.Handle})
	})
}

// inactiveState maps a host's account status to a repo state.
func inactiveState(status string) (store.RepoState, bool) {
	switch status {
	case "deactivated":
		return store.StateDeactivated, true
	case "takendown":
		return store.StateTakendown, true
	case "suspended":
		return store.StateSuspended, true
	case "deleted":
		return store.StateDeleted, true
	}
	return 0, false
}

func (ix *Indexer) handleAccount(ctx context.Context, msg *comatproto.SyncSubscribeRepos_Account) error {
	did := msg.Did
	if _, err := syntax.ParseDID(did); err != nil {
		return err
	}
	unlock := ix.lock(did)
	defer unlock()
	r, err := ix.repo(ctx, did)
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
		err := ix.write(ctx, func(tx store.Tx) error {
			cur, err := tx.Repo(did)
			if err != nil {
				return err
			}
			next := *cur
			next.State, next.Status, next.Resync, next.Updated = store.StatePending, "", true, now
			if err := tx.PutRepo(&next); err != nil {
				return err
			}
			if err := tx.Enqueue(did, now); err != nil {
				return err
			}
			return tx.AppendEvent(&store.Event{Kind: store.KindAccount, Live: true, DID: did, Time: now, Active: true})
		})
		if err == nil {
			ix.bf.Kick()
		}
		return err
	}
	state, known := inactiveState(status)
	if !known {
		// desynchronized, throttled and unknown statuses: the host's
		// problem, not the account's; say so without changing state.
		return ix.write(ctx, func(tx store.Tx) error {
			return tx.AppendEvent(&store.Event{Kind: store.KindAccount, Live: true, DID: did, Time: now, Status: status})
		})
	}
	if r.State == state && r.Status == status {
		return nil
	}
	if state == store.StateDeleted {
		// State first, without the status: a backfill in flight sees it
		// and stops before its next batch, instead of writing records
		// behind the deletion. If the process stops before the end, the
		// message comes again (the cursor is behind it) and, the status
		// not being set yet, the deletion is finished.
		if err := ix.write(ctx, func(tx store.Tx) error {
			cur, err := tx.Repo(did)
			if err != nil {
				return err
			}
			next := *cur
			next.State, next.Status, next.Updated = store.StateDeleted, "", now
			if err := tx.PutRepo(&next); err != nil {
				return err
			}
			if err := tx.Dequeue(did); err != nil {
				return err
			}
			return tx.DeleteBuffer(did, "")
		}); err != nil {
			return err
		}
		if err := ix.deleteRecords(ctx, did, func(string) bool { return true }, true); err != nil {
			return err
		}
	}
	return ix.write(ctx, func(tx store.Tx) error {
		cur, err := tx.Repo(did)
		if err != nil {
			return err
		}
		next := *cur
		next.State, next.Status, next.Updated = state, status, now
		if err := tx.PutRepo(&next); err != nil {
			return err
		}
		if err := tx.Dequeue(did); err != nil {
			return err
		}
		if err := tx.DeleteBuffer(did, ""); err != nil {
			return err
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindAccount, Live: true, DID: did, Time: now, Status: status})
	})
}

// deleteRecords removes a repo's records of the collections selected by
// which, each with a delete event, in batches.
func (ix *Indexer) deleteRecords(ctx context.Context, did string, which func(collection string) bool, live bool) error {
	const batch = 1000
	after := ""
	for {
		var page []*store.Record
		err := ix.st.View(ctx, func(tx store.ReadTx) error {
			return tx.ScanRecords(store.RecordScan{DID: did, After: after}, func(r *store.Record) (bool, error) {
				page = append(page, r)
				return len(page) < batch, nil
			})
		})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].Collection + "/" + page[len(page)-1].RKey
		now := time.Now()
		err = ix.write(ctx, func(tx store.Tx) error {
			rev := ""
			if repo, err := tx.Repo(did); err == nil {
				rev = repo.Rev // deletes belong to the repo's current rev
			}
			for _, r := range page {
				if !which(r.Collection) {
					continue
				}
				if _, err := tx.Record(did, r.Collection, r.RKey); errors.Is(err, store.ErrNotFound) {
					continue
				}
				if rev == "" {
					rev = r.Rev
				}
				if err := store.WriteRecordChange(tx, &store.Event{Kind: store.KindRecord, Live: live, DID: did, Rev: rev,
					Time: now, Collection: r.Collection, RKey: r.RKey, Action: store.ActionDelete}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

// resyncAll queues a resync of every synced repo.
func (ix *Indexer) resyncAll(ctx context.Context) error {
	err := ix.forEachRepo(ctx, func(r *store.Repo) error {
		if r.State != store.StateSynced {
			return nil
		}
		unlock := ix.lock(r.DID)
		defer unlock()
		return ix.write(ctx, func(tx store.Tx) error {
			cur, err := tx.Repo(r.DID)
			if err != nil || cur.State != store.StateSynced {
				return err
			}
			return ix.requeue(tx, cur)
		})
	})
	ix.bf.Kick()
	return err
}
