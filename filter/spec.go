package filter

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// ErrInvalidSpec is wrapped by every error that Validate, Compile, Apply and
// DecodeSpec return for a Spec or Patch that breaks the rules.
var ErrInvalidSpec = errors.New("filter: invalid spec")

// ErrNoCollections is returned by Spec.Apply when a patch would remove every
// collection pattern. An empty Collections means "store every collection",
// so removing the last pattern would silently widen the filter; to store
// everything, add "*" (in the same patch, if you like).
var ErrNoCollections = errors.New(`filter: patch removes every collection pattern (an empty list stores all collections; add "*" to mean that)`)

// Spec says what part of the network is indexed. It is plain data: the zero
// Spec tracks nothing and, once something is tracked, stores every
// collection.
//
// A repo is tracked when it is not in Excludes and any of these holds:
// FullNetwork is set, its DID is in DIDs, or it holds a record in a
// collection matched by Signals. Of a tracked repo, the records of
// collections matched by Collections are stored and emitted (all of them
// when Collections is empty). Excludes wins over everything else.
//
// Patterns are collection patterns as parsed by ParsePattern; DIDs are parsed
// by syntax.ParseDID. Use Validate (or Compile) before trusting a Spec from
// input. The JSON encoding (lower camel field names, empty lists omitted) is
// the one used by the HTTP API and, through Encode and DecodeSpec, for
// persistence.
type Spec struct {
	// FullNetwork tracks every repo on the network (minus Excludes).
	FullNetwork bool `json:"fullNetwork,omitempty"`
	// DIDs are tracked explicitly.
	DIDs []string `json:"dids,omitempty"`
	// Signals are collection patterns: a repo that holds a record in any
	// matching collection is tracked. Any number may be given.
	Signals []string `json:"signals,omitempty"`
	// Collections are the patterns of collections stored and emitted. Empty
	// means all collections.
	Collections []string `json:"collections,omitempty"`
	// Excludes are DIDs that are never indexed, whatever else says.
	Excludes []string `json:"excludes,omitempty"`
}

// SpecError says which entry of a Spec or Patch is invalid. It wraps both
// ErrInvalidSpec and the underlying error (for a pattern, a *PatternError
// wrapping ErrInvalidPattern).
type SpecError struct {
	// Field is the JSON name of the field, such as "dids" or "addSignals".
	Field string
	// Index is the position of Value in the field's list.
	Index int
	// Value is the offending entry as given.
	Value string
	// Err is what is wrong with it.
	Err error
}

// Error names the field, the position and the value.
func (e *SpecError) Error() string {
	return fmt.Sprintf("filter: %s[%d] %q: %v", e.Field, e.Index, e.Value, e.Err)
}

// Unwrap returns ErrInvalidSpec and the underlying error.
func (e *SpecError) Unwrap() []error { return []error{ErrInvalidSpec, e.Err} }

// Validate checks every DID (DIDs, Excludes) with syntax.ParseDID and every
// pattern (Signals, Collections) with ParsePattern. It returns nil, a
// *SpecError, or several *SpecError joined with errors.Join, one per invalid
// entry. A list longer than MaxPatterns or MaxDIDs is refused first, with a
// *SizeError, and its entries are not checked.
func (s Spec) Validate() error {
	if err := s.checkSizes(); err != nil {
		return err
	}
	var errs []error
	errs = validateDIDs(errs, "dids", s.DIDs)
	errs = validatePatterns(errs, "signals", s.Signals)
	errs = validatePatterns(errs, "collections", s.Collections)
	errs = validateDIDs(errs, "excludes", s.Excludes)
	return errors.Join(errs...)
}

func validateDIDs(errs []error, field string, dids []string) []error {
	for i, d := range dids {
		if _, err := syntax.ParseDID(d); err != nil {
			errs = append(errs, &SpecError{Field: field, Index: i, Value: d, Err: fmt.Errorf("invalid DID: %w", err)})
		}
	}
	return errs
}

func validatePatterns(errs []error, field string, patterns []string) []error {
	for i, p := range patterns {
		if _, err := ParsePattern(p); err != nil {
			errs = append(errs, &SpecError{Field: field, Index: i, Value: p, Err: err})
		}
	}
	return errs
}

// Normalize returns a copy of s with every list sorted and deduplicated and
// empty lists set to nil. It does not share memory with s. Two Specs that
// mean the same lists normalize to equal values and to equal encodings.
func (s Spec) Normalize() Spec {
	return Spec{
		FullNetwork: s.FullNetwork,
		DIDs:        sortedSet(s.DIDs),
		Signals:     sortedSet(s.Signals),
		Collections: sortedSet(s.Collections),
		Excludes:    sortedSet(s.Excludes),
	}
}

func sortedSet(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

// Clone returns a deep copy of s.
func (s Spec) Clone() Spec {
	return Spec{
		FullNetwork: s.FullNetwork,
		DIDs:        slices.Clone(s.DIDs),
		Signals:     slices.Clone(s.Signals),
		Collections: slices.Clone(s.Collections),
		Excludes:    slices.Clone(s.Excludes),
	}
}

// Equal reports whether a and b are the same after normalization.
func (s Spec) Equal(o Spec) bool {
	a, b := s.Normalize(), o.Normalize()
	return a.FullNetwork == b.FullNetwork &&
		slices.Equal(a.DIDs, b.DIDs) &&
		slices.Equal(a.Signals, b.Signals) &&
		slices.Equal(a.Collections, b.Collections) &&
		slices.Equal(a.Excludes, b.Excludes)
}

// Encode returns the stable persisted form of s: the JSON of s.Normalize().
// Equal Specs encode to identical bytes.
func (s Spec) Encode() ([]byte, error) {
	return json.Marshal(s.Normalize())
}

// DecodeSpec parses what Encode wrote (or any JSON Spec), validates it and
// returns it normalized. Unknown fields are ignored, so that a Spec written
// by a newer version can still be read.
func DecodeSpec(data []byte) (Spec, error) {
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return Spec{}, fmt.Errorf("%w: decode: %w", ErrInvalidSpec, err)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s.Normalize(), nil
}
