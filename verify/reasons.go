package verify

import (
	"fmt"
	"time"
)

// Limits a live commit must respect, after the relay's own.
const (
	// MaxCommitBlocks bounds the CAR bytes of one #commit (the lexicon's 2 MB).
	MaxCommitBlocks = 2_000_000
	// MaxCommitOps bounds the ops of one #commit.
	MaxCommitOps = 200
	// MaxFutureRev is how far ahead of the clock a rev may be.
	MaxFutureRev = 5 * time.Minute
)

// RejectReason says why a live commit was not applied.
type RejectReason string

// The reasons a commit is rejected.
const (
	RejectMalformed    RejectReason = "malformed"
	RejectBadSignature RejectReason = "bad_signature"
	RejectCIDMismatch  RejectReason = "cid_mismatch"
	RejectBrokenChain  RejectReason = "broken_chain"
	RejectFutureRev    RejectReason = "future_rev"
	RejectTooLarge     RejectReason = "too_large"
	RejectBadOps       RejectReason = "bad_ops"
)

// RejectReasons lists every reason, for metrics.
var RejectReasons = []RejectReason{RejectMalformed, RejectBadSignature, RejectCIDMismatch,
	RejectBrokenChain, RejectFutureRev, RejectTooLarge, RejectBadOps}

// CommitError says why a live commit was not applied.
type CommitError struct {
	DID    string
	Rev    string
	Reason RejectReason
	Err    error
}

func (e *CommitError) Error() string {
	return fmt.Sprintf("commit %s@%s rejected (%s): %v", e.DID, e.Rev, e.Reason, e.Err)
}

func (e *CommitError) Unwrap() error { return e.Err }

// Reject returns a *CommitError for did@rev, with a formatted cause.
func Reject(did, rev string, reason RejectReason, format string, args ...any) *CommitError {
	return &CommitError{DID: did, Rev: rev, Reason: reason, Err: fmt.Errorf(format, args...)}
}
