package filter

import (
	"errors"
	"fmt"
)

// Bounds on the size of a Spec or a Patch. Every pattern of a list is
// compared with every other when a filter changes, so the pattern lists are
// kept short; DID lists are sets and may be long.
const (
	// MaxPatterns bounds each pattern list (signals, collections, and a
	// patch's lists of them).
	MaxPatterns = 1000
	// MaxDIDs bounds each DID list (dids, excludes, and a patch's lists of
	// them). Repos tracked through Indexer.Track are not in the filter and
	// not bounded by it.
	MaxDIDs = 100_000
)

// ErrTooLarge is wrapped, with ErrInvalidSpec, by the *SizeError that
// Validate returns for a list longer than its bound.
var ErrTooLarge = errors.New("filter: too many entries")

// SizeError says which list of a Spec or Patch is longer than allowed.
type SizeError struct {
	// Field is the JSON name of the list, such as "collections".
	Field string
	// Len is how many entries it has; Max how many are allowed.
	Len, Max int
}

// Error names the list, its length and the bound.
func (e *SizeError) Error() string {
	return fmt.Sprintf("filter: %s lists %d entries; at most %d are allowed", e.Field, e.Len, e.Max)
}

// Unwrap returns ErrInvalidSpec and ErrTooLarge.
func (e *SizeError) Unwrap() []error { return []error{ErrInvalidSpec, ErrTooLarge} }

// sizeList is one list to bound.
type sizeList struct {
	field string
	n     int
	max   int
}

// checkSizes returns a *SizeError per list over its bound, or nil.
func checkSizes(lists ...sizeList) error {
	var errs []error
	for _, l := range lists {
		if l.n > l.max {
			errs = append(errs, &SizeError{Field: l.field, Len: l.n, Max: l.max})
		}
	}
	return errors.Join(errs...)
}

func (s Spec) checkSizes() error {
	return checkSizes(
		sizeList{"dids", len(s.DIDs), MaxDIDs},
		sizeList{"signals", len(s.Signals), MaxPatterns},
		sizeList{"collections", len(s.Collections), MaxPatterns},
		sizeList{"excludes", len(s.Excludes), MaxDIDs},
	)
}

func (p Patch) checkSizes() error {
	return checkSizes(
		sizeList{"addDids", len(p.AddDIDs), MaxDIDs},
		sizeList{"removeDids", len(p.RemoveDIDs), MaxDIDs},
		sizeList{"addSignals", len(p.AddSignals), MaxPatterns},
		sizeList{"removeSignals", len(p.RemoveSignals), MaxPatterns},
		sizeList{"addCollections", len(p.AddCollections), MaxPatterns},
		sizeList{"removeCollections", len(p.RemoveCollections), MaxPatterns},
		sizeList{"addExcludes", len(p.AddExcludes), MaxDIDs},
		sizeList{"removeExcludes", len(p.RemoveExcludes), MaxDIDs},
	)
}
