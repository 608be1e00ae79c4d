package filter

import "strings"

// Filter is a compiled Spec: it answers which repos are tracked and which
// collections are stored, without allocating, with map lookups for DIDs and
// exact collections. A Filter is immutable and safe for concurrent use; to
// change the filter, compile a new Spec and swap the pointer.
type Filter struct {
	spec        Spec // normalized, owned
	explicit    map[string]struct{}
	excluded    map[string]struct{}
	signals     matcher
	collections matcher // all is set when Spec.Collections is empty
}

// Compile validates spec and compiles it. The Filter keeps its own
// normalized copy of spec. The error is what Spec.Validate returns.
func Compile(spec Spec) (*Filter, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	s := spec.Normalize()
	f := &Filter{
		spec:     s,
		explicit: stringSet(s.DIDs),
		excluded: stringSet(s.Excludes),
	}
	f.signals = compileMatcher(s.Signals)
	f.collections = compileMatcher(s.Collections)
	if len(s.Collections) == 0 {
		f.collections.all = true
	}
	return f, nil
}

func stringSet(ss []string) map[string]struct{} {
	m := make(map[string]struct{}, len(ss))
	for _, s := range ss {
		m[s] = struct{}{}
	}
	return m
}

// Spec returns a copy of the (normalized) Spec the filter was compiled from.
func (f *Filter) Spec() Spec { return f.spec.Clone() }

// FullNetwork reports whether every repo is tracked.
func (f *Filter) FullNetwork() bool { return f.spec.FullNetwork }

// Explicit reports whether did is listed in Spec.DIDs. It does not consult
// Excludes; see Tracks.
func (f *Filter) Explicit(did string) bool {
	_, ok := f.explicit[did]
	return ok
}

// Excluded reports whether did is listed in Spec.Excludes.
func (f *Filter) Excluded(did string) bool {
	_, ok := f.excluded[did]
	return ok
}

// Stores reports whether records of collection are stored and emitted. With
// an empty Spec.Collections it is true for every collection.
func (f *Filter) Stores(collection string) bool { return f.collections.match(collection) }

// IsSignal reports whether holding a record of collection makes a repo
// tracked. With no signals it is always false.
func (f *Filter) IsSignal(collection string) bool { return f.signals.match(collection) }

// HasSignals reports whether the spec has any signal pattern, that is,
// whether repos can become tracked by what they hold.
func (f *Filter) HasSignals() bool { return len(f.spec.Signals) > 0 }

// Tracks reports whether the repo did is tracked, given whether it is known
// to hold a record in a signal collection: it is not excluded, and the
// filter follows the full network, lists it explicitly, or hasSignalRecord.
func (f *Filter) Tracks(did string, hasSignalRecord bool) bool {
	if f.Excluded(did) {
		return false
	}
	return f.spec.FullNetwork || f.Explicit(did) || hasSignalRecord
}

// TracksWithoutSignal reports whether did is tracked whatever it holds:
// not excluded, and full network or explicit. A repo for which this is false
// is tracked only while it holds a signal record.
func (f *Filter) TracksWithoutSignal(did string) bool { return f.Tracks(did, false) }

// matcher matches collections against exact names (map lookup), prefixes
// (each ending in "."), or everything.
type matcher struct {
	all      bool
	exact    map[string]struct{}
	prefixes []string
}

// compileMatcher compiles valid pattern strings; invalid ones are skipped
// (callers validate first).
func compileMatcher(patterns []string) matcher {
	m := matcher{exact: make(map[string]struct{})}
	for _, s := range patterns {
		p, err := ParsePattern(s)
		if err != nil {
			continue
		}
		switch p.kind {
		case kindAll:
			m.all = true
		case kindExact:
			m.exact[p.raw] = struct{}{}
		case kindPrefix:
			m.prefixes = append(m.prefixes, p.prefix)
		}
	}
	return m
}

func (m *matcher) match(nsid string) bool {
	if m.all {
		return true
	}
	if _, ok := m.exact[nsid]; ok {
		return true
	}
	for _, p := range m.prefixes {
		if len(nsid) > len(p) && strings.HasPrefix(nsid, p) {
			return true
		}
	}
	return false
}
