package repos

import (
	"context"
	"errors"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/verify"
)

// InactiveState maps a host's account status ("deactivated", "takendown",
// "suspended", "deleted") to a repo state; false for any other status
// (desynchronized, throttled, unknown), which says nothing of the account.
func InactiveState(status string) (store.RepoState, bool) {
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

// MarkBackfilling writes r, in tx, as being backfilled now, and drops the
// live commits held for it: they were received before the CAR is fetched,
// so the CAR holds them; only those that arrive from now on are applied
// after the backfill (FinishBackfill).
func MarkBackfilling(tx store.Tx, r *store.Repo, now time.Time) error {
	next := *r
	next.State, next.Updated = store.StateBackfilling, now
	if err := tx.PutRepo(&next); err != nil {
		return err
	}
	return tx.DeleteBuffer(r.DID, "")
}

// MarkFailed writes r, in tx, as a failed backfill attempt (state error,
// one more retry counted, the error's kind and message), with the repo
// event that tells consumers its sync failed (Status "error", Error
// "<kind>: <message>"), and queues it at next.
func MarkFailed(tx store.Tx, r *store.Repo, kind, msg string, next, now time.Time) error {
	n := *r
	n.State, n.ErrorKind, n.LastError, n.Updated = store.StateError, kind, msg, now
	n.Retries++
	n.NextAttempt = next
	if err := tx.PutRepo(&n); err != nil {
		return err
	}
	if err := tx.AppendEvent(&store.Event{Kind: store.KindRepo, DID: n.DID, Rev: n.Rev, Time: now,
		Status: n.State.String(), Error: kind + ": " + msg}); err != nil {
		return err
	}
	return tx.Enqueue(r.DID, next)
}

// MarkDeferred writes r, in tx, as an attempt put off (its host is rate
// limited): the error is recorded but no retry is counted, a repo being
// backfilled goes back to pending, and it is queued at next.
func MarkDeferred(tx store.Tx, r *store.Repo, kind, msg string, next, now time.Time) error {
	n := *r
	n.ErrorKind, n.LastError, n.Updated = kind, msg, now
	if n.State == store.StateBackfilling {
		n.State = store.StatePending
	}
	n.NextAttempt = next
	if err := tx.PutRepo(&n); err != nil {
		return err
	}
	return tx.Enqueue(r.DID, next)
}

// MarkInactive writes r, in tx, in the state of an account status the
// host reported while backfilling it ("deactivated", "takendown",
// "suspended" or "deleted", see InactiveState), its error cleared, and
// dequeues it, with a (non-live) account event unless that status was
// already recorded. Records are not touched.
func MarkInactive(tx store.Tx, r *store.Repo, status string, now time.Time) error {
	state, _ := InactiveState(status)
	emit := r.Status != status
	next := *r
	next.State, next.Status = state, status
	ClearError(&next)
	next.Updated = now
	if err := tx.PutRepo(&next); err != nil {
		return err
	}
	if err := tx.Dequeue(r.DID); err != nil {
		return err
	}
	if !emit {
		return nil
	}
	return tx.AppendEvent(&store.Event{Kind: store.KindAccount, DID: r.DID, Time: now, Active: false, Status: status})
}

// ClearError forgets a repo's last failure and its retries.
func ClearError(r *store.Repo) {
	r.ErrorKind, r.LastError, r.Retries, r.NextAttempt = "", "", 0, time.Time{}
}

// MarkSynced writes r as synced in tx, errors cleared, and dequeues it: the
// one way into the synced state, at the end of a backfill (by backfill
// itself, or after the live commits held meanwhile were applied).
func MarkSynced(tx store.Tx, r *store.Repo, now time.Time) error {
	next := *r
	next.State = store.StateSynced
	next.Resync, next.SyncRev = false, ""
	ClearError(&next)
	next.Updated = now
	if err := tx.PutRepo(&next); err != nil {
		return err
	}
	return tx.Dequeue(r.DID)
}

// Requeue puts a repo back to pending, due now, in tx.
func Requeue(tx store.Tx, r *store.Repo) error {
	now := time.Now()
	next := *r
	next.State, next.Resync, next.Updated = store.StatePending, true, now
	next.Retries, next.NextAttempt = 0, time.Time{}
	if err := tx.PutRepo(&next); err != nil {
		return err
	}
	return tx.Enqueue(r.DID, now)
}

// Track queues a repo for backfill unless it is already tracked (a deleted
// repo is tracked anew). Tracking explicitly a repo tracked for another
// reason records the explicit reason. The caller holds the lock.
func (t *Table) Track(ctx context.Context, did, reason string) error {
	queued := false
	err := t.w.Write(ctx, func(tx store.Tx) error {
		queued = false
		now := time.Now()
		r, err := tx.Repo(did)
		switch {
		case err == nil && r.State != store.StateDeleted:
			if reason == ReasonExplicit && r.Reason != ReasonExplicit {
				next := *r
				next.Reason = ReasonExplicit
				return tx.PutRepo(&next)
			}
			return nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return err
		}
		queued = true
		if err := tx.PutRepo(&store.Repo{DID: did, State: store.StatePending, Reason: reason, Updated: now}); err != nil {
			return err
		}
		return tx.Enqueue(did, now)
	})
	if err == nil && queued {
		t.kick()
	}
	return err
}

// Discover tracks a repo found by one of its live commits, and holds the
// commit (bc) for after the backfill; if the repo is tracked meanwhile the
// commit is only held. The caller holds the lock.
func (t *Table) Discover(ctx context.Context, did, reason string, bc *store.BufferedCommit) error {
	err := t.w.Write(ctx, func(tx store.Tx) error {
		if _, err := tx.Repo(did); err == nil {
			return tx.PutBuffer(bc)
		}
		now := time.Now()
		if err := tx.PutRepo(&store.Repo{DID: did, State: store.StatePending, Reason: reason, Updated: now}); err != nil {
			return err
		}
		if err := tx.Enqueue(did, now); err != nil {
			return err
		}
		return tx.PutBuffer(bc)
	})
	if err == nil {
		t.kick()
	}
	return err
}

// Untrack forgets a repo. With deleteData it is first marked deleted
// ("untracked") and dequeued, so that a backfill in flight stops before its
// next batch rather than write records behind the deletion, and its
// records are removed, each with a delete event. The caller holds the lock.
func (t *Table) Untrack(ctx context.Context, did string, deleteData bool) error {
	_, err := t.untrack(ctx, did, deleteData)
	return err
}

// untrack is Untrack, returning how many records it deleted.
func (t *Table) untrack(ctx context.Context, did string, deleteData bool) (int64, error) {
	var deleted int64
	if deleteData {
		if err := t.w.Write(ctx, func(tx store.Tx) error {
			r, err := tx.Repo(did)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			next := *r
			next.State, next.Status, next.Updated = store.StateDeleted, "untracked", time.Now()
			if err := tx.PutRepo(&next); err != nil {
				return err
			}
			return tx.Dequeue(did)
		}); err != nil {
			return 0, err
		}
		n, err := DeleteRecords(ctx, t.st, t.w, did, DeleteOptions{})
		if deleted = n; err != nil {
			return deleted, err
		}
	}
	return deleted, t.w.Write(ctx, func(tx store.Tx) error { return tx.DeleteRepo(did) })
}

// Resync queues a tracked repo for a new backfill. It reports false, and
// writes nothing, for a repo that is not tracked. The caller holds the lock.
func (t *Table) Resync(ctx context.Context, did string) (tracked bool, err error) {
	err = t.w.Write(ctx, func(tx store.Tx) error {
		r, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) {
			tracked = false
			return nil
		}
		if err != nil {
			return err
		}
		tracked = true
		return Requeue(tx, r)
	})
	if err == nil && tracked {
		t.kick()
	}
	return tracked, err
}

// ResyncTracked queues a resync of a tracked, active repo; untracked repos
// are left alone. It takes the lock.
func (t *Table) ResyncTracked(ctx context.Context, did string) error {
	unlock := t.Lock(did)
	defer unlock()
	err := t.w.Write(ctx, func(tx store.Tx) error {
		r, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) || err == nil && !r.State.Active() {
			return nil
		}
		if err != nil {
			return err
		}
		return Requeue(tx, r)
	})
	t.kick()
	return err
}

// ResyncAll queues a resync of every synced repo, taking each one's lock.
func (t *Table) ResyncAll(ctx context.Context) error {
	err := t.ForEach(ctx, func(r *store.Repo) error {
		if r.State != store.StateSynced {
			return nil
		}
		unlock := t.Lock(r.DID)
		defer unlock()
		return t.w.Write(ctx, func(tx store.Tx) error {
			cur, err := tx.Repo(r.DID)
			if err != nil || cur.State != store.StateSynced {
				return err
			}
			return Requeue(tx, cur)
		})
	})
	t.kick()
	return err
}

// RequeueWhere queues again every active repo not already pending that
// keep selects, taking each one's lock (a filter change).
func (t *Table) RequeueWhere(ctx context.Context, keep func(r *store.Repo) bool) error {
	err := t.ForEach(ctx, func(r *store.Repo) error {
		if !r.State.Active() || r.State == store.StatePending || !keep(r) {
			return nil
		}
		unlock := t.Lock(r.DID)
		defer unlock()
		return t.w.Write(ctx, func(tx store.Tx) error {
			cur, err := tx.Repo(r.DID)
			if err != nil {
				return err
			}
			return Requeue(tx, cur)
		})
	})
	t.kick()
	return err
}

// MarkDesync records that a repo's live chain broke (or a commit was
// rejected), counts the rejection and queues a resync.
func (t *Table) MarkDesync(ctx context.Context, did string, ce *verify.CommitError) error {
	err := t.w.Write(ctx, func(tx store.Tx) error {
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
		if err := CountReject(tx, ce.Reason); err != nil {
			return err
		}
		return tx.Enqueue(did, time.Now())
	})
	if err == nil {
		t.kick()
	}
	return err
}

// DropHeld drops the live commits held for a repo that is not synced, when
// they pass a cap, and makes sure a full backfill follows: a repo being
// backfilled is queued again at once (the CAR in flight may predate the
// commits dropped); a queued one keeps its place and backoff, as its
// backfill fetches everything. A synced or untracked repo is left alone.
// The caller holds the repo's live lock.
func (t *Table) DropHeld(ctx context.Context, did string) error {
	requeued := false
	err := t.w.Write(ctx, func(tx store.Tx) error {
		requeued = false
		r, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) {
			return tx.DeleteBuffer(did, "")
		}
		if err != nil {
			return err
		}
		if err := tx.DeleteBuffer(did, ""); err != nil {
			return err
		}
		switch r.State {
		case store.StateSynced:
			return nil
		case store.StateBackfilling:
			requeued = true
			next := *r
			next.State, next.Resync, next.Updated = store.StatePending, true, time.Now()
			if err := tx.PutRepo(&next); err != nil {
				return err
			}
			return tx.Enqueue(did, time.Now())
		default:
			if r.Resync {
				return nil
			}
			next := *r
			next.Resync = true
			return tx.PutRepo(&next)
		}
	})
	if err == nil && requeued {
		t.kick()
	}
	return err
}

// FinishBackfill ends a backfill whose held live commits were applied: the
// repo is synced (MarkSynced), or queued again when a #sync announced a
// newer state than the backfill found (see NoteSyncRev). A repo that left
// the backfilling state meanwhile (untracked, a rejection, an account
// event) is left as it is. The caller holds the lock.
func (t *Table) FinishBackfill(ctx context.Context, did string) error {
	requeued := false
	err := t.w.Write(ctx, func(tx store.Tx) error {
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
		if r.SyncRev != "" && r.SyncRev > r.Rev {
			// A #sync announced a newer state than the backfill found:
			// fetch again.
			next := *r
			next.State, next.Resync, next.SyncRev, next.Updated = store.StatePending, true, "", time.Now()
			requeued = true
			if err := tx.PutRepo(&next); err != nil {
				return err
			}
			return tx.Enqueue(did, time.Now())
		}
		return MarkSynced(tx, r, time.Now())
	})
	if err == nil && requeued {
		t.kick()
	}
	return err
}

// NoteSyncRev remembers the rev of a #sync that came while the repo was
// queued or backfilling (the CAR being fetched may predate it), so that a
// backfill ending below it is done again (FinishBackfill).
func (t *Table) NoteSyncRev(ctx context.Context, did, rev string) error {
	return t.w.Write(ctx, func(tx store.Tx) error {
		cur, err := tx.Repo(did)
		if err != nil || cur.SyncRev >= rev {
			return err
		}
		next := *cur
		next.SyncRev = rev
		return tx.PutRepo(&next)
	})
}

// AdvanceRev moves a synced repo at rev from to rev to, its data being
// unchanged (a #sync of the state already held).
func (t *Table) AdvanceRev(ctx context.Context, did, from, to string) error {
	return t.w.Write(ctx, func(tx store.Tx) error {
		cur, err := tx.Repo(did)
		if err != nil || cur.Rev != from {
			return err
		}
		next := *cur
		next.Rev = to
		return tx.PutRepo(&next)
	})
}

// SetIdentity records a repo's handle, PDS and signing key (as resolved
// after an #identity) and emits an identity event when the handle changed.
// signingKey "" keeps the key held; handle "" (not checked yet) keeps the
// handle held, for SetHandle to write once it is checked.
func (t *Table) SetIdentity(ctx context.Context, did, handle, pds, signingKey string) error {
	return t.w.Write(ctx, func(tx store.Tx) error {
		cur, err := tx.Repo(did)
		if err != nil {
			return err
		}
		next := *cur
		next.PDS = pds
		if handle != "" {
			next.Handle = handle
		}
		if signingKey != "" {
			next.SigningKey = signingKey
		}
		if err := tx.PutRepo(&next); err != nil {
			return err
		}
		if cur.Handle == next.Handle {
			return nil
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, Live: true, DID: did, Time: time.Now(), Handle: next.Handle})
	})
}

// SetHandle records the verdict of a repo's handle check (the handle, or
// "handle.invalid") and emits an identity event, live or not, when it
// changed what the repo held. A repo not tracked (any more) is left alone.
// It reports whether the handle changed.
func (t *Table) SetHandle(ctx context.Context, did, handle string, live bool) (bool, error) {
	changed := false
	err := t.w.Write(ctx, func(tx store.Tx) error {
		changed = false
		cur, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Handle == handle {
			return nil
		}
		next := *cur
		next.Handle = handle
		if err := tx.PutRepo(&next); err != nil {
			return err
		}
		changed = true
		return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, Live: live, DID: did, Time: time.Now(), Handle: handle})
	})
	return changed, err
}

// Reactivate brings an inactive account back: pending, queued for a
// resync (the repo may have changed meanwhile), with an account event.
func (t *Table) Reactivate(ctx context.Context, did string, now time.Time) error {
	err := t.w.Write(ctx, func(tx store.Tx) error {
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
		t.kick()
	}
	return err
}

// AccountStatus emits an account event of a status that says nothing of
// the account itself (desynchronized, throttled, unknown), without changing
// its state.
func (t *Table) AccountStatus(ctx context.Context, did, status string, now time.Time) error {
	return t.w.Write(ctx, func(tx store.Tx) error {
		return tx.AppendEvent(&store.Event{Kind: store.KindAccount, Live: true, DID: did, Time: now, Status: status})
	})
}

// BeginDelete marks an account deleted, without its status, dequeued and
// with its held commits dropped: a backfill in flight sees it and stops
// before its next batch, instead of writing records behind the deletion.
// Then the caller removes the records (DeleteRecords) and records the
// status (SetInactive); if the process stops before, the deletion is
// finished when the message comes again, the status not being set yet.
func (t *Table) BeginDelete(ctx context.Context, did string, now time.Time) error {
	return t.w.Write(ctx, func(tx store.Tx) error {
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
	})
}

// SetInactive records an account's inactive state and status (see
// InactiveState): dequeued, its held commits dropped, an account event
// emitted. Records are kept (a deleted account's are removed first, see
// BeginDelete).
func (t *Table) SetInactive(ctx context.Context, did string, state store.RepoState, status string, now time.Time) error {
	return t.w.Write(ctx, func(tx store.Tx) error {
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
