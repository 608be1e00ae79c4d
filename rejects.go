package cistern

import "github.com/cistern-dev/cistern/verify"

// The checks of a live commit and their reasons live in package verify;
// these names keep cistern's API as it was.

// Limits a live commit must respect, after the relay's own.
const (
	// MaxCommitBlocks bounds the CAR bytes of one #commit (the lexicon's 2 MB).
	MaxCommitBlocks = verify.MaxCommitBlocks
	// MaxCommitOps bounds the ops of one #commit.
	MaxCommitOps = verify.MaxCommitOps
	// MaxFutureRev is how far ahead of the clock a rev may be.
	MaxFutureRev = verify.MaxFutureRev
)

// RejectReason says why a live commit was not applied (verify.RejectReason).
type RejectReason = verify.RejectReason

// The reasons a commit is rejected.
const (
	RejectMalformed    = verify.RejectMalformed
	RejectBadSignature = verify.RejectBadSignature
	RejectCIDMismatch  = verify.RejectCIDMismatch
	RejectBrokenChain  = verify.RejectBrokenChain
	RejectFutureRev    = verify.RejectFutureRev
	RejectTooLarge     = verify.RejectTooLarge
	RejectBadOps       = verify.RejectBadOps
)

// RejectReasons lists every reason, for metrics.
var RejectReasons = verify.RejectReasons

// CommitError says why a live commit was not applied (verify.CommitError).
type CommitError = verify.CommitError
