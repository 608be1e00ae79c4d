package store

import (
	"fmt"
	"time"
)

// RepoState is where a repo stands in the sync state machine.
type RepoState uint8

// The repo states. The zero value is not a valid state.
const (
	// StatePending: queued for backfill.
	StatePending RepoState = iota + 1
	// StateBackfilling: a backfill is running.
	StateBackfilling
	// StateSynced: backfilled, following the firehose.
	StateSynced
	// StateError: the last backfill failed; it is retried at NextAttempt.
	StateError
	// StateDesynchronized: a live commit could not be applied (broken chain
	// or failed verification); a resync is queued.
	StateDesynchronized
	// StateDeactivated, StateTakendown, StateSuspended: the account is not
	// active at its host; kept, not retried until it is active again.
	StateDeactivated
	StateTakendown
	StateSuspended
	// StateDeleted: the account or repo is gone; its records were removed.
	StateDeleted
)

var stateNames = map[RepoState]string{
	StatePending:        "pending",
	StateBackfilling:    "backfilling",
	StateSynced:         "synced",
	StateError:          "error",
	StateDesynchronized: "desynchronized",
	StateDeactivated:    "deactivated",
	StateTakendown:      "takendown",
	StateSuspended:      "suspended",
	StateDeleted:        "deleted",
}

// RepoStates lists every valid state in order.
var RepoStates = []RepoState{StatePending, StateBackfilling, StateSynced, StateError,
	StateDesynchronized, StateDeactivated, StateTakendown, StateSuspended, StateDeleted}

// String returns the state's lower-case name.
func (s RepoState) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("RepoState(%d)", uint8(s))
}

// ParseRepoState parses a state name as printed by String.
func ParseRepoState(name string) (RepoState, error) {
	for s, n := range stateNames {
		if n == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("store: unknown repo state %q", name)
}

// Active reports whether the account is active (not deactivated, taken down,
// suspended or deleted).
func (s RepoState) Active() bool {
	return s != StateDeactivated && s != StateTakendown && s != StateSuspended && s != StateDeleted
}

// Repo is the persisted state of one tracked repo. Encoded as CBOR with
// integer keys; new fields take new keys.
type Repo struct {
	DID   string    `cbor:"1,keyasint"`
	State RepoState `cbor:"2,keyasint"`
	// Rev and Data are the rev and MST root CID (string form) of the last
	// commit applied.
	Rev  string `cbor:"3,keyasint,omitempty"`
	Data string `cbor:"4,keyasint,omitempty"`
	// Handle, PDS and SigningKey (multibase) as last resolved.
	Handle     string `cbor:"5,keyasint,omitempty"`
	PDS        string `cbor:"6,keyasint,omitempty"`
	SigningKey string `cbor:"7,keyasint,omitempty"`
	// Status is the host's account status when inactive ("deactivated",
	// "takendown", ...); "" when active.
	Status string `cbor:"8,keyasint,omitempty"`
	// ErrorKind and LastError describe the last failure; Retries counts
	// consecutive failures and NextAttempt is when the next try is due.
	ErrorKind   string    `cbor:"9,keyasint,omitempty"`
	LastError   string    `cbor:"10,keyasint,omitempty"`
	Retries     int       `cbor:"11,keyasint,omitempty"`
	NextAttempt time.Time `cbor:"12,keyasint,omitempty"`
	// Reason says why the repo is tracked: "explicit", "signal", "network".
	Reason string `cbor:"13,keyasint,omitempty"`
	// Updated is when the state was last written.
	Updated time.Time `cbor:"14,keyasint,omitempty"`
	// Resync is set when live commits must wait for a new backfill.
	Resync bool `cbor:"15,keyasint,omitempty"`
	// Commit is the CID (string form) of the last signed commit applied.
	Commit string `cbor:"16,keyasint,omitempty"`
	// SyncRev is the newest rev a #sync announced while the repo was not
	// synced: a backfill that ends below it is done again.
	SyncRev string `cbor:"17,keyasint,omitempty"`
}

// Record is one stored record.
type Record struct {
	DID        string
	Collection string
	RKey       string
	// CID is the binary CID of the record value.
	CID []byte
	// Rev is the repo rev at which the record was last written.
	Rev string
	// Seq is the position of the last write in the store's record order,
	// assigned by PutRecord; used by ScanCollection.
	Seq uint64
	// Value is the DAG-CBOR record value (nil unless loaded).
	Value []byte
}

// EventKind says what an event is about.
type EventKind uint8

// Event kinds.
const (
	KindRecord EventKind = iota + 1
	KindIdentity
	KindAccount
	// KindRepo tells that a repo's sync failed: its backfill (or resync)
	// ended in the error state. Status is the state ("error") and Error
	// says why.
	KindRepo
)

// String returns "record", "identity", "account" or "repo".
func (k EventKind) String() string {
	switch k {
	case KindRecord:
		return "record"
	case KindIdentity:
		return "identity"
	case KindAccount:
		return "account"
	case KindRepo:
		return "repo"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Action is what happened to a record.
type Action uint8

// Record actions.
const (
	ActionCreate Action = iota + 1
	ActionUpdate
	ActionDelete
)

// String returns "create", "update" or "delete".
func (a Action) String() string {
	switch a {
	case ActionCreate:
		return "create"
	case ActionUpdate:
		return "update"
	case ActionDelete:
		return "delete"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Event is one entry of the event log. The cbor tags give its CBOR form,
// with integer keys; a store may encode it its own way (boltstore uses a
// compact binary form). Record (the value) is not part of the encoding but
// lives in the block store under (DID, CID).
type Event struct {
	// ID is assigned by AppendEvent.
	ID   uint64    `cbor:"-"`
	Kind EventKind `cbor:"1,keyasint"`
	// Live is true for changes from the firehose, false for backfill.
	Live bool   `cbor:"2,keyasint,omitempty"`
	DID  string `cbor:"3,keyasint"`
	Rev  string `cbor:"4,keyasint,omitempty"`
	// Time is when the change was seen. Stores keep it to the nanosecond
	// and return it in UTC.
	Time time.Time `cbor:"5,keyasint"`

	// Record events.
	Collection string `cbor:"6,keyasint,omitempty"`
	RKey       string `cbor:"7,keyasint,omitempty"`
	Action     Action `cbor:"8,keyasint,omitempty"`
	CID        []byte `cbor:"9,keyasint,omitempty"` // binary CID; nil on delete
	Record     []byte `cbor:"-"`                    // DAG-CBOR value; nil on delete

	// Identity events.
	Handle string `cbor:"10,keyasint,omitempty"`

	// Account events; Status is also the repo state of repo events.
	Active bool   `cbor:"11,keyasint,omitempty"`
	Status string `cbor:"12,keyasint,omitempty"`

	// Repo events: why the sync failed, "<kind>: <message>" (the kinds of
	// package backfill: fetch, verify, too-large, invalid, ...).
	Error string `cbor:"13,keyasint,omitempty"`
}

// BufferedCommit is a live commit held while its repo backfills.
type BufferedCommit struct {
	DID string
	Rev string
	// Seq is the firehose sequence number the commit came with.
	Seq int64
	// Source names the firehose source.
	Source string
	// Data is the raw message (the CBOR body of the #commit frame).
	Data []byte
}
