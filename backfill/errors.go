package backfill

import (
	"errors"
	"fmt"
	"time"
)

// Error kinds recorded in store.Repo.ErrorKind when a backfill fails.
const (
	KindResolve     = "resolve"      // the identity could not be resolved (not "not found")
	KindNetwork     = "network"      // the request failed before a response
	KindTimeout     = "timeout"      // FetchTimeout passed
	KindHTTP        = "http"         // an unexpected HTTP status (5xx and others)
	KindTruncated   = "truncated"    // the body ended early
	KindTooLarge    = "too_large"    // the CAR exceeds MaxRepoSize
	KindMalformed   = "malformed"    // the CAR, commit or MST could not be read
	KindVerify      = "verify"       // the commit signature did not verify
	KindRateLimited = "rate_limited" // the host answered 429; not counted as a retry
	KindHook        = "hook"         // Options.OnBackfilled failed
	KindInvalid     = "invalid"      // the queued DID is not a valid DID
	KindBlock       = "block"        // getBlocks left out a block, or sent one that does not hash to its CID
)

var (
	// ErrRepoNotFound is returned by Backfill when the PDS or the resolver
	// says the repo does not exist. Its records were removed (with delete
	// events) and the repo was marked StateDeleted.
	ErrRepoNotFound = errors.New("backfill: repo not found")
	// ErrRepoInactive is returned by Backfill when the PDS says the account
	// is deactivated, taken down or suspended; the state was recorded and
	// the repo is not retried. Wrapped in an *InactiveError.
	ErrRepoInactive = errors.New("backfill: repo inactive")
	// ErrNotTracked is returned by Backfill when the filter does not track
	// the repo (excluded, or in signal mode without a record in a signal
	// collection). Its records and state were removed.
	ErrNotTracked = errors.New("backfill: repo not tracked")
	// ErrRateLimited is wrapped by an *Error of kind "rate_limited": the
	// repo's host is paused and the repo was queued again for when the
	// pause ends, without counting a retry.
	ErrRateLimited = errors.New("backfill: host rate limited")
	// ErrBlockMissing is wrapped by the failure (kind "block") of a sparse
	// backfill whose getBlocks answer lacked a block it asked for.
	ErrBlockMissing = errors.New("backfill: getBlocks did not return a requested block")
	// ErrBlockMismatch is wrapped by the failure (kind "block") of a sparse
	// backfill that received a block whose bytes do not hash to its CID.
	ErrBlockMismatch = errors.New("backfill: block does not match its CID")
	// errNoGetBlocks says that a host does not serve getBlocks (or
	// getLatestCommit): the backfill falls back to getRepo.
	errNoGetBlocks = errors.New("backfill: host does not serve com.atproto.sync.getBlocks")
	// errTooWide says that an automatic sparse walk found the wanted key
	// ranges to be too large a part of the repo: it falls back to getRepo.
	errTooWide = errors.New("backfill: wanted key ranges are a large part of the repo")
	// errGone aborts a backfill whose repo state was removed meanwhile
	// (untracked while it ran).
	errGone = errors.New("backfill: repo state removed or changed during backfill")
	// errStale ends a backfill picked from a queue entry that was stale: the
	// repo is synced, inactive or deleted by now.
	errStale = errors.New("backfill: repo no longer needs a backfill")
)

// Error is a failed backfill, as recorded on the repo.
type Error struct {
	DID  string
	Kind string // one of the Kind... constants
	// Retry is when the repo is queued again.
	Retry time.Time
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("backfill %s: %s: %v", e.DID, e.Kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// InactiveError says that the host reported the account inactive.
type InactiveError struct {
	DID    string
	Status string // "deactivated", "takendown" or "suspended"
}

func (e *InactiveError) Error() string {
	return fmt.Sprintf("backfill %s: repo %s", e.DID, e.Status)
}

func (e *InactiveError) Unwrap() error { return ErrRepoInactive }

// failure is an error with its kind, before it is recorded.
type failure struct {
	kind string
	err  error
	// until, for rate limits: when the host accepts requests again.
	until time.Time
	// unknown: the repo had no state when the attempt began (a direct
	// Scheduler.Backfill of a DID never tracked), so the failure is
	// recorded on a new state rather than dropped as "untracked meanwhile".
	unknown bool
	// host is the PDS host the attempt asked, once known.
	host string
}

func (f *failure) Error() string { return f.kind + ": " + f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func fail(kind string, format string, args ...any) *failure {
	return &failure{kind: kind, err: fmt.Errorf(format, args...)}
}
