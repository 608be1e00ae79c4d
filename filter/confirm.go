package filter

import (
	"errors"
	"fmt"
	"strings"
)

// ErrDeleteNotConfirmed is wrapped by the *DeleteError that Spec.Apply and
// Change.CheckConfirmed return for a change that would delete stored
// records when the caller did not confirm it.
var ErrDeleteNotConfirmed = errors.New("filter: change deletes stored records and was not confirmed")

// DeleteError refuses a filter change that would delete stored records
// without the caller's confirmation (Patch.ConfirmDelete, "confirmDelete"
// over HTTP). It names what would be deleted. It wraps
// ErrDeleteNotConfirmed.
type DeleteError struct {
	// Collections are the collection patterns stored before and not
	// covered after the change ("*" when every collection was stored);
	// Kept are the patterns stored after it. Records of collections matched
	// by Collections and not by Kept would be deleted.
	Collections, Kept []string
	// DIDs are newly excluded repos, all of whose records would be deleted.
	DIDs []string
}

// Error names the collections and DIDs whose records would be deleted and
// how to confirm.
func (e *DeleteError) Error() string {
	var parts []string
	if len(e.Collections) > 0 {
		kept := "no collection"
		if len(e.Kept) > 0 {
			kept = fmt.Sprintf("%q", e.Kept)
		}
		parts = append(parts, fmt.Sprintf("the records of collections matched by %q and not by %s", e.Collections, kept))
	}
	if len(e.DIDs) > 0 {
		parts = append(parts, fmt.Sprintf("all records of the newly excluded %s", strings.Join(e.DIDs, ", ")))
	}
	return "filter: this change would delete " + strings.Join(parts, ", and ") +
		`; to go ahead, confirm it ("confirmDelete": true, or Patch.ConfirmDelete)`
}

// Unwrap returns ErrDeleteNotConfirmed.
func (e *DeleteError) Unwrap() error { return ErrDeleteNotConfirmed }

// Deletes reports whether the change deletes stored records: it narrows
// the stored collections, or excludes DIDs. (Whether any such record is
// actually stored is for the indexer to know.) Removing DIDs or signals,
// or turning FullNetwork off, deletes nothing: the repos stay tracked until
// untracked.
func (c Change) Deletes() bool {
	return c.CollectionsNarrowed || len(c.Excluded) > 0
}

// CheckConfirmed returns nil when the change deletes nothing or confirmed is
// set, and otherwise a *DeleteError naming what it would delete.
func (c Change) CheckConfirmed(confirmed bool) error {
	if confirmed || !c.Deletes() {
		return nil
	}
	e := &DeleteError{DIDs: c.Excluded}
	if c.CollectionsNarrowed {
		e.Collections = c.CollectionsRemoved.Strings()
		e.Kept = effectiveCollections(c.New.spec).Strings()
	}
	return e
}
