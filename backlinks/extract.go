// Package backlinks finds the links a record holds and answers who links to
// what.
//
// A link is a string in a record's value that is an at-uri
// ("at://did:plc:…/app.bsky.feed.post/3k…", a strong ref's uri included) or
// a DID. Extract walks a record's DAG-CBOR value and returns each link with
// its path, named as constellation names them: map keys joined with ".",
// an array element as "[]", or "[t]" when the element is a map whose $type
// is t ("subject.uri", "reply.parent.uri",
// "facets[].features[app.bsky.richtext.facet#mention].did"). A source is a
// collection and a path, written "collection:path"
// ("app.bsky.feed.like:subject.uri").
//
// The index itself lives in the store (store.Tx.PutLinks and the ReadTx
// scans). The writer keeps it in the same transaction as the records when
// it is on (Indexer.Links); Builder builds it from the records already
// stored when it is turned on; Query answers Backlinks and counts; Recount
// recomputes the counts from the stored records, for checks.
package backlinks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/cistern-dev/cistern/store"
)

// ErrMalformed is wrapped by Extract's error for a value that is not
// DAG-CBOR (or too deeply nested to walk).
var ErrMalformed = errors.New("backlinks: malformed record value")

// Limits of what is indexed. A link whose target or path is longer is left
// out (a valid at-uri is at most 8 KiB); a value nested deeper than
// MaxDepth is malformed.
const (
	MaxTargetLen = 8 << 10
	MaxPathLen   = 1 << 10
	MaxDepth     = 128
)

// Extract returns the links in a record's DAG-CBOR value, sorted by path
// then target, each (target, path) once. A value that does not parse
// returns no links and an error wrapping ErrMalformed; an empty value has
// no links.
func Extract(value []byte) ([]store.Link, error) {
	if len(value) == 0 {
		return nil, nil
	}
	w := walker{b: value}
	if err := w.walk(make([]byte, 0, 64), 0); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(w.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the value", ErrMalformed, len(w.b))
	}
	links := w.links
	slices.SortFunc(links, func(a, b store.Link) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Target, b.Target)
	})
	return slices.Compact(links), nil
}

// IsTarget reports whether s is something a link can point at: an at-uri
// or a DID, as the indigo syntax package parses them.
func IsTarget(s string) bool {
	switch {
	case strings.HasPrefix(s, "at://"):
		_, err := syntax.ParseATURI(s)
		return err == nil
	case strings.HasPrefix(s, "did:"):
		_, err := syntax.ParseDID(s)
		return err == nil
	}
	return false
}

// walker reads CBOR data items from b, consuming it.
type walker struct {
	b     []byte
	links []store.Link
}

// CBOR major types.
const (
	majorUint = iota
	majorNeg
	majorBytes
	majorText
	majorArray
	majorMap
	majorTag
	majorSimple
)

// head reads the initial byte and argument of a data item.
func (w *walker) head() (major byte, arg uint64, err error) {
	if len(w.b) == 0 {
		return 0, 0, errors.New("unexpected end")
	}
	ib := w.b[0]
	w.b = w.b[1:]
	major, ai := ib>>5, ib&31
	var n int
	switch {
	case ai < 24:
		return major, uint64(ai), nil
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	default:
		return 0, 0, fmt.Errorf("additional info %d (indefinite lengths are not DAG-CBOR)", ai)
	}
	if len(w.b) < n {
		return 0, 0, errors.New("unexpected end")
	}
	switch n {
	case 1:
		arg = uint64(w.b[0])
	case 2:
		arg = uint64(binary.BigEndian.Uint16(w.b))
	case 4:
		arg = uint64(binary.BigEndian.Uint32(w.b))
	default:
		arg = binary.BigEndian.Uint64(w.b)
	}
	w.b = w.b[n:]
	return major, arg, nil
}

// take consumes n bytes.
func (w *walker) take(n uint64) ([]byte, error) {
	if n > uint64(len(w.b)) {
		return nil, errors.New("unexpected end")
	}
	v := w.b[:n]
	w.b = w.b[n:]
	return v, nil
}

// text reads a text string.
func (w *walker) text() (string, error) {
	major, n, err := w.head()
	if err != nil {
		return "", err
	}
	if major != majorText {
		return "", fmt.Errorf("map key of major type %d, not a string", major)
	}
	v, err := w.take(n)
	return string(v), err
}

// walk reads one data item, recording the links in it under path.
func (w *walker) walk(path []byte, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("nested deeper than %d", MaxDepth)
	}
	major, arg, err := w.head()
	if err != nil {
		return err
	}
	switch major {
	case majorUint, majorNeg, majorSimple:
		return nil
	case majorBytes:
		_, err := w.take(arg)
		return err
	case majorText:
		v, err := w.take(arg)
		if err != nil {
			return err
		}
		if len(v) <= MaxTargetLen && len(path) <= MaxPathLen && len(path) > 0 &&
			(len(v) > 4 && (string(v[:4]) == "did:" || string(v[:4]) == "at:/")) {
			s := string(v)
			if IsTarget(s) {
				w.links = append(w.links, store.Link{Target: s, Path: string(path)})
			}
		}
		return nil
	case majorTag:
		return w.walk(path, depth+1) // CIDs (tag 42) hold bytes: no link
	case majorArray:
		if arg > uint64(len(w.b)) {
			return errors.New("array longer than the value")
		}
		for i := uint64(0); i < arg; i++ {
			t, err := w.elementType()
			if err != nil {
				return err
			}
			p := append(append(append(path, '['), t...), ']')
			if err := w.walk(p, depth+1); err != nil {
				return err
			}
		}
		return nil
	case majorMap:
		if arg > uint64(len(w.b)) {
			return errors.New("map longer than the value")
		}
		for i := uint64(0); i < arg; i++ {
			k, err := w.text()
			if err != nil {
				return err
			}
			p := path
			if len(p) > 0 {
				p = append(p, '.')
			}
			if err := w.walk(append(p, k...), depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("major type %d", major)
}

// elementType returns the $type of the array element that follows if it is
// a map with a string $type, without consuming it; "" otherwise.
func (w *walker) elementType() (string, error) {
	peek := walker{b: w.b}
	major, n, err := peek.head()
	if err != nil || major != majorMap {
		return "", err
	}
	for i := uint64(0); i < n; i++ {
		k, err := peek.text()
		if err != nil {
			return "", err
		}
		if k == "$type" {
			if len(peek.b) > 0 && peek.b[0]>>5 == majorText {
				return peek.text()
			}
			return "", nil
		}
		if err := peek.skip(0); err != nil {
			return "", err
		}
	}
	return "", nil
}

// skip consumes one data item.
func (w *walker) skip(depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("nested deeper than %d", MaxDepth)
	}
	major, arg, err := w.head()
	if err != nil {
		return err
	}
	switch major {
	case majorBytes, majorText:
		_, err := w.take(arg)
		return err
	case majorTag:
		return w.skip(depth + 1)
	case majorArray, majorMap:
		if arg > uint64(len(w.b)) {
			return errors.New("container longer than the value")
		}
		n := arg
		if major == majorMap {
			n *= 2
		}
		for i := uint64(0); i < n; i++ {
			if err := w.skip(depth + 1); err != nil {
				return err
			}
		}
	}
	return nil
}
