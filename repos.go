package cistern

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/query"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/store"
)

// Repo is the state of one tracked repo, as returned by Indexer.Repo.
type Repo struct {
	store.Repo
	// Records is the number of records stored for the repo.
	Records int64
}

// RepoError is returned by WaitSynced when a repo's backfill failed or the
// account is not active.
type RepoError struct {
	DID    string
	State  store.RepoState
	Kind   string // error kind, or the account status
	Reason string
	// Retries and NextAttempt say when a failed backfill is tried again.
	Retries     int
	NextAttempt time.Time
}

func (e *RepoError) Error() string {
	return fmt.Sprintf("cistern: repo %s is %s (%s): %s", e.DID, e.State, e.Kind, e.Reason)
}

// Track starts tracking a repo explicitly (whatever the filter says) and
// queues its backfill. Tracking a repo already tracked queues nothing and
// is not an error. Excluded DIDs are refused.
func (ix *Indexer) Track(ctx context.Context, did string) error {
	did, err := query.ParseDID(did)
	if err != nil {
		return err
	}
	if err := ix.checkOpen(); err != nil {
		return err
	}
	if ix.Filter().Excluded(did) {
		return fmt.Errorf("%w: %s", ErrExcluded, did)
	}
	unlock := ix.lock(did)
	defer unlock()
	return ix.closedErr(ix.repos.Track(ctx, did, repos.ReasonExplicit))
}

// Untrack stops tracking a repo. With deleteData its records are removed,
// each with a delete event, and its state is forgotten; otherwise records
// stay queryable but are no longer kept in sync. Untracking an untracked
// repo is not an error.
//
// A DID listed in the filter's DIDs is removed from them (and the filter
// saved), so that its next commit does not track it again. A repo tracked
// because the filter selects it otherwise (full network, or a record in a
// signal collection) is tracked again by its next such commit: to keep a
// repo out whatever it writes, add it to the filter's Excludes instead.
func (ix *Indexer) Untrack(ctx context.Context, did string, deleteData bool) error {
	did, err := query.ParseDID(did)
	if err != nil {
		return err
	}
	if err := ix.checkOpen(); err != nil {
		return err
	}
	if ix.Filter().Explicit(did) {
		if _, err := ix.PatchFilter(ctx, filter.Patch{RemoveDIDs: []string{did}}); err != nil {
			return fmt.Errorf("cistern: untrack %s: remove it from the filter: %w", did, err)
		}
	}
	unlock := ix.lock(did)
	defer unlock()
	return ix.closedErr(ix.repos.Untrack(ctx, did, deleteData))
}

// Resync queues a tracked repo for a new backfill; the diff against what is
// stored emits only the differences. Live commits are held meanwhile.
func (ix *Indexer) Resync(ctx context.Context, did string) error {
	did, err := query.ParseDID(did)
	if err != nil {
		return err
	}
	if err := ix.checkOpen(); err != nil {
		return err
	}
	unlock := ix.lock(did)
	defer unlock()
	tracked, err := ix.repos.Resync(ctx, did)
	if err == nil && !tracked {
		return fmt.Errorf("%w: %s", ErrNotTracked, did)
	}
	return ix.closedErr(err)
}

// Repo returns the state of one repo, or an error wrapping ErrNotTracked.
// repo is a DID or the handle of a tracked repo, as in the HTTP API.
func (ix *Indexer) Repo(ctx context.Context, repo string) (*Repo, error) {
	r, n, err := ix.q.Repo(ctx, repo)
	if err != nil {
		return nil, err
	}
	return &Repo{Repo: *r, Records: n}, nil
}

// ListReposOptions select a page of repos.
type ListReposOptions struct {
	// State, if non-zero, keeps only repos in that state.
	State store.RepoState
	// Cursor is the last DID of the previous page ("" for the first).
	Cursor string
	// Limit bounds the page. Default 100, at most 1000.
	Limit int
}

// RepoPage is one page of repos; Cursor is "" on the last page.
type RepoPage struct {
	Repos  []store.Repo
	Cursor string
}

// ListRepos lists tracked repos in DID order.
func (ix *Indexer) ListRepos(ctx context.Context, opts ListReposOptions) (*RepoPage, error) {
	repos, cursor, err := ix.q.Repos(ctx, opts.State, opts.Cursor, opts.Limit)
	if err != nil {
		return nil, err
	}
	return &RepoPage{Repos: repos, Cursor: cursor}, nil
}

// WaitSynced returns nil once the repo's backfill is applied (state
// synced). It returns a *RepoError as soon as an attempt failed (state
// error: the backfill is retried at NextAttempt, so call WaitSynced again to
// wait through the retry) or the account is not active; an error wrapping
// ErrNotTracked for a repo that is not tracked; ErrClosed after Close; or
// ctx's error. Nothing is backfilled unless Run is running, so without it
// WaitSynced waits until ctx ends.
func (ix *Indexer) WaitSynced(ctx context.Context, did string) error {
	did, err := query.ParseDID(did)
	if err != nil {
		return err
	}
	for {
		if err := ix.checkOpen(); err != nil {
			return err
		}
		ch := ix.changes()
		r, err := ix.repos.Get(ctx, did)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("%w: %s", ErrNotTracked, did)
		case err != nil:
			return ix.closedErr(err)
		case r.State == store.StateSynced:
			return nil
		case r.State == store.StateError:
			return &RepoError{DID: did, State: r.State, Kind: r.ErrorKind, Reason: r.LastError,
				Retries: r.Retries, NextAttempt: r.NextAttempt}
		case !r.State.Active():
			return &RepoError{DID: did, State: r.State, Kind: r.Status, Reason: "account is not active"}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-ix.ctx.Done():
			return ErrClosed
		}
	}
}
