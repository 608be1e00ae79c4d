package filter

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// ErrInvalidPattern is wrapped by every error that ParsePattern returns.
var ErrInvalidPattern = errors.New("filter: invalid collection pattern")

// PatternError says why a collection pattern was refused. It wraps
// ErrInvalidPattern.
type PatternError struct {
	// Pattern is the input as given.
	Pattern string
	// Reason names the problem in words.
	Reason string
}

// Error returns a message that quotes the pattern and names the problem.
func (e *PatternError) Error() string {
	return fmt.Sprintf("filter: invalid collection pattern %q: %s", e.Pattern, e.Reason)
}

// Unwrap returns ErrInvalidPattern.
func (e *PatternError) Unwrap() error { return ErrInvalidPattern }

// maxNSIDLen is the longest NSID the atproto syntax allows.
const maxNSIDLen = 317

type patternKind uint8

const (
	kindNone patternKind = iota // zero Pattern: matches nothing
	kindExact
	kindPrefix
	kindAll
)

// Pattern selects collections by NSID. It is one of:
//
//   - an exact NSID, such as "app.bsky.feed.post", which matches that
//     collection only;
//   - a wildcard at a segment boundary, such as "app.bsky.graph.*", which
//     matches every NSID with one or more segments after the prefix
//     ("app.bsky.graph.follow", "app.bsky.graph.x.y") but neither
//     "app.bsky.graph" itself nor "app.bsky.graphx";
//   - a bare "*", which matches every collection.
//
// Matching is byte-exact (case-sensitive), as collection names are compared
// verbatim in repositories. The zero Pattern matches nothing. Build patterns
// with ParsePattern.
type Pattern struct {
	raw    string
	prefix string // for kindPrefix: raw without the trailing "*", ending in "."
	kind   patternKind
}

// ParsePattern parses a collection pattern. It refuses anything that is not
// a valid NSID, a valid NSID prefix followed by ".*", or "*"; the returned
// error is a *PatternError wrapping ErrInvalidPattern.
func ParsePattern(s string) (Pattern, error) {
	switch {
	case s == "":
		return Pattern{}, &PatternError{Pattern: s, Reason: "empty pattern"}
	case s == "*":
		return Pattern{raw: s, kind: kindAll}, nil
	case strings.HasSuffix(s, ".*"):
		prefix := s[:len(s)-2]
		if reason := checkPrefix(prefix); reason != "" {
			return Pattern{}, &PatternError{Pattern: s, Reason: reason}
		}
		return Pattern{raw: s, prefix: s[:len(s)-1], kind: kindPrefix}, nil
	case strings.Contains(s, "*"):
		return Pattern{}, &PatternError{Pattern: s,
			Reason: `a wildcard is allowed only as a whole last segment (".*") or as "*" alone`}
	}
	if _, err := syntax.ParseNSID(s); err != nil {
		return Pattern{}, &PatternError{Pattern: s, Reason: "not a valid NSID: " + err.Error()}
	}
	return Pattern{raw: s, kind: kindExact}, nil
}

// checkPrefix validates the segments in front of a ".*" wildcard: each is a
// domain-name label (1-63 letters, digits or hyphens, not starting or ending
// with a hyphen), the first starts with a letter, and the prefix leaves room
// for at least one more segment within the NSID length limit. It returns ""
// when the prefix is valid, or the reason it is not.
func checkPrefix(prefix string) string {
	if prefix == "" {
		return `empty prefix before ".*"`
	}
	if len(prefix)+2 > maxNSIDLen {
		return fmt.Sprintf("prefix too long (%d bytes; an NSID is at most %d)", len(prefix), maxNSIDLen)
	}
	for i, seg := range strings.Split(prefix, ".") {
		switch {
		case seg == "":
			return fmt.Sprintf("empty segment %d in prefix", i+1)
		case len(seg) > 63:
			return fmt.Sprintf("segment %q is longer than 63 characters", seg)
		case i == 0 && !isLetter(seg[0]):
			return fmt.Sprintf("first segment %q must start with a letter", seg)
		case seg[0] == '-' || seg[len(seg)-1] == '-':
			return fmt.Sprintf("segment %q starts or ends with a hyphen", seg)
		}
		for j := 0; j < len(seg); j++ {
			if c := seg[j]; !isLetter(c) && !isDigit(c) && c != '-' {
				return fmt.Sprintf("segment %q contains %q; only letters, digits and hyphens are allowed", seg, rune(c))
			}
		}
	}
	return ""
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// MustParsePattern is like ParsePattern but panics on error. It is meant for
// patterns written in code (tests, package-level variables), never for input.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Match reports whether the collection nsid is selected by the pattern. It
// does not validate nsid and does not allocate.
func (p Pattern) Match(nsid string) bool {
	switch p.kind {
	case kindExact:
		return nsid == p.raw
	case kindPrefix:
		return len(nsid) > len(p.prefix) && nsid[:len(p.prefix)] == p.prefix
	case kindAll:
		return true
	}
	return false
}

// String returns the pattern as it was parsed.
func (p Pattern) String() string { return p.raw }

// IsWildcard reports whether the pattern is "*" or ends in ".*".
func (p Pattern) IsWildcard() bool { return p.kind == kindPrefix || p.kind == kindAll }

// MarshalText returns the pattern as it was parsed.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.raw), nil }

// UnmarshalText parses text with ParsePattern.
func (p *Pattern) UnmarshalText(text []byte) error {
	q, err := ParsePattern(string(text))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// Patterns is a set of collection patterns; a collection matches the set if
// it matches any of them. An empty Patterns matches nothing: what "no
// patterns" means (nothing, or everything) is the caller's decision.
type Patterns []Pattern

// ParsePatterns parses every string with ParsePattern. If some are invalid,
// the error joins one *PatternError per invalid string (errors.Join) and the
// returned Patterns is nil.
func ParsePatterns(ss []string) (Patterns, error) {
	ps := make(Patterns, 0, len(ss))
	var errs []error
	for _, s := range ss {
		p, err := ParsePattern(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps = append(ps, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ps, nil
}

// Match reports whether any pattern in ps matches nsid. It does not allocate.
func (ps Patterns) Match(nsid string) bool {
	for i := range ps {
		if ps[i].Match(nsid) {
			return true
		}
	}
	return false
}

// Strings returns the patterns as they were parsed.
func (ps Patterns) Strings() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.raw
	}
	return out
}
