package backlinks

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Limits of a page of backlinks, as constellation's.
const (
	DefaultLimit = 16
	MaxLimit     = 100
)

var (
	// ErrInvalidInput is wrapped by every *InputError.
	ErrInvalidInput = errors.New("backlinks: invalid input")
	// ErrOff is returned by queries when the index is not kept (Config.Backlinks
	// is off).
	ErrOff = errors.New("backlinks: the backlink index is off")
	// ErrBuilding is wrapped by the *BuildingError queries return while the
	// index is being built from the stored records.
	ErrBuilding = errors.New("backlinks: the backlink index is being built")
)

// InputError says which parameter of a query is malformed. It wraps
// ErrInvalidInput and the parser's error.
type InputError struct {
	Param string // "target", "source", "cursor" or "limit"
	Value string
	Err   error
}

// Error names the parameter and the value.
func (e *InputError) Error() string {
	return fmt.Sprintf("backlinks: bad %s %q: %v", e.Param, e.Value, e.Err)
}

// Unwrap returns ErrInvalidInput and the parser's error.
func (e *InputError) Unwrap() []error { return []error{ErrInvalidInput, e.Err} }

// BuildingError is returned by queries while the index is being built: its
// answers would miss links of the records not visited yet.
type BuildingError struct {
	Done, Total int64 // records visited, and the records stored when the build began
}

// Error says how far the build is.
func (e *BuildingError) Error() string {
	return fmt.Sprintf("backlinks: the backlink index is being built from the stored records (%d of about %d visited); try again later", e.Done, e.Total)
}

// Unwrap returns ErrBuilding.
func (e *BuildingError) Unwrap() error { return ErrBuilding }

// ParseTarget checks that target is an at-uri or a DID.
func ParseTarget(target string) error {
	var err error
	switch {
	case target == "":
		err = errors.New("empty: want an at-uri or a DID")
	case strings.HasPrefix(target, "at://"):
		_, err = syntax.ParseATURI(target)
	case strings.HasPrefix(target, "did:"):
		_, err = syntax.ParseDID(target)
	default:
		err = errors.New("not an at-uri (at://…) or a DID (did:…)")
	}
	if err != nil {
		return &InputError{Param: "target", Value: target, Err: err}
	}
	return nil
}

// ParseSource splits a source "collection:path" (as constellation writes
// it: "app.bsky.feed.like:subject.uri") into a collection, an NSID, and a
// path. A leading "." of the path is dropped.
func ParseSource(source string) (collection, path string, err error) {
	collection, path, ok := strings.Cut(source, ":")
	path = strings.TrimPrefix(path, ".")
	switch {
	case !ok || path == "":
		err = errors.New(`want "collection:path", as in "app.bsky.feed.like:subject.uri"`)
	case len(path) > MaxPathLen:
		err = fmt.Errorf("path longer than %d bytes", MaxPathLen)
	default:
		if _, perr := syntax.ParseNSID(collection); perr != nil {
			err = fmt.Errorf("collection: %w", perr)
		}
	}
	if err != nil {
		return "", "", &InputError{Param: "source", Value: source, Err: err}
	}
	return collection, path, nil
}

// parseCursor reads a cursor of Backlinks: "" or the position of the last
// record of the previous page.
func parseCursor(cursor string) (uint64, error) {
	if cursor == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(cursor, 10, 64)
	if err == nil && n == 0 {
		err = errors.New("zero")
	}
	if err != nil {
		return 0, &InputError{Param: "cursor", Value: cursor, Err: errors.New("not a cursor of a previous page")}
	}
	return n, nil
}

// checkLimit applies the default limit and refuses one out of range.
func checkLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultLimit, nil
	case limit < 0 || limit > MaxLimit:
		return 0, &InputError{Param: "limit", Value: strconv.Itoa(limit), Err: fmt.Errorf("want 1 to %d", MaxLimit)}
	}
	return limit, nil
}
