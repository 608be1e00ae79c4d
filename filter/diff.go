package filter

import "strings"

// Change is what moving from one Spec to another asks of the indexer. Build
// it with Diff.
//
// Lists of DIDs are sorted. A DID appears in at most one of Tracked,
// Untracked and Excluded.
type Change struct {
	// Old and New are the compiled filters the change goes between.
	Old, New *Filter

	// CollectionsAdded are the patterns of New that select collections Old
	// did not store: tracked repos must be backfilled again for them. It is
	// {"*"} when New stores every collection and Old did not. Empty when the
	// collections were not widened.
	CollectionsAdded Patterns
	// CollectionsNarrowed is set when Old stored some collection that New
	// does not; Removed says which.
	CollectionsNarrowed bool
	// CollectionsRemoved are the patterns of Old that select collections
	// New does not store ({"*"} when Old stored every collection): the
	// stored records of those collections, less what New still stores, are
	// to be deleted. Empty when CollectionsNarrowed is false.
	CollectionsRemoved Patterns

	// SignalsAdded are the signal patterns of New that select collections
	// no signal of Old did: repos holding such records must be discovered.
	SignalsAdded Patterns
	// SignalsRemoved are the signal patterns of Old that select collections
	// no signal of New does: repos tracked only through them may be dropped.
	SignalsRemoved Patterns

	// FullNetworkStarted and FullNetworkStopped report a change of
	// Spec.FullNetwork.
	FullNetworkStarted, FullNetworkStopped bool

	// Tracked are DIDs explicit and not excluded under New that were not
	// both under Old (newly listed, or listed and no longer excluded).
	Tracked []string
	// Untracked are DIDs explicit and not excluded under Old that are no
	// longer listed under New (newly excluded DIDs are in Excluded instead).
	// They may still be tracked through full network or a signal.
	Untracked []string
	// Excluded are DIDs excluded under New and not under Old: their data
	// must be removed.
	Excluded []string
	// Unexcluded are DIDs excluded under Old and not under New: they may be
	// tracked again (when explicit, they are also in Tracked).
	Unexcluded []string
}

// Diff compiles old and new and says what changed between them. The error
// is what Compile returns for an invalid Spec.
func Diff(oldSpec, newSpec Spec) (Change, error) {
	of, err := Compile(oldSpec)
	if err != nil {
		return Change{}, err
	}
	nf, err := Compile(newSpec)
	if err != nil {
		return Change{}, err
	}
	return DiffFilters(of, nf), nil
}

// DiffFilters is Diff for filters already compiled.
func DiffFilters(old, next *Filter) Change {
	c := Change{Old: old, New: next}

	oldColl, newColl := effectiveCollections(old.spec), effectiveCollections(next.spec)
	c.CollectionsAdded = uncovered(newColl, oldColl)
	c.CollectionsRemoved = uncovered(oldColl, newColl)
	c.CollectionsNarrowed = len(c.CollectionsRemoved) > 0

	oldSig, newSig := mustPatterns(old.spec.Signals), mustPatterns(next.spec.Signals)
	c.SignalsAdded = uncovered(newSig, oldSig)
	c.SignalsRemoved = uncovered(oldSig, newSig)

	c.FullNetworkStarted = next.spec.FullNetwork && !old.spec.FullNetwork
	c.FullNetworkStopped = old.spec.FullNetwork && !next.spec.FullNetwork

	// The specs are normalized: lists are sorted, so results come out sorted.
	for _, d := range next.spec.Excludes {
		if !old.Excluded(d) {
			c.Excluded = append(c.Excluded, d)
		}
	}
	for _, d := range old.spec.Excludes {
		if !next.Excluded(d) {
			c.Unexcluded = append(c.Unexcluded, d)
		}
	}
	for _, d := range next.spec.DIDs {
		if !next.Excluded(d) && !(old.Explicit(d) && !old.Excluded(d)) {
			c.Tracked = append(c.Tracked, d)
		}
	}
	for _, d := range old.spec.DIDs {
		if !old.Excluded(d) && !next.Explicit(d) && !next.Excluded(d) {
			c.Untracked = append(c.Untracked, d)
		}
	}
	return c
}

// CollectionsWidened reports whether New stores a collection Old did not,
// so tracked repos need a re-backfill.
func (c Change) CollectionsWidened() bool { return len(c.CollectionsAdded) > 0 }

// Added reports whether collection is stored under New and was not under
// Old: its records must be fetched again for tracked repos.
func (c Change) Added(collection string) bool {
	return c.New.Stores(collection) && !c.Old.Stores(collection)
}

// Removed reports whether collection was stored under Old and is no longer
// stored under New: its stored records are to be deleted.
func (c Change) Removed(collection string) bool {
	return c.Old.Stores(collection) && !c.New.Stores(collection)
}

// IsZero reports whether nothing the indexer acts on changed.
func (c Change) IsZero() bool {
	return len(c.CollectionsAdded) == 0 && !c.CollectionsNarrowed &&
		len(c.SignalsAdded) == 0 && len(c.SignalsRemoved) == 0 &&
		!c.FullNetworkStarted && !c.FullNetworkStopped &&
		len(c.Tracked) == 0 && len(c.Untracked) == 0 &&
		len(c.Excluded) == 0 && len(c.Unexcluded) == 0
}

// effectiveCollections is the spec's collection patterns, with an empty list
// meaning "*".
func effectiveCollections(s Spec) Patterns {
	if len(s.Collections) == 0 {
		return Patterns{{raw: "*", kind: kindAll}}
	}
	return mustPatterns(s.Collections)
}

// mustPatterns parses patterns already validated; invalid ones are skipped.
func mustPatterns(ss []string) Patterns {
	ps := make(Patterns, 0, len(ss))
	for _, s := range ss {
		if p, err := ParsePattern(s); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// uncovered returns the patterns of ps that select some collection no
// pattern of by selects. A wildcard selects infinitely many names, so a
// finite set of patterns covers it only if one pattern does: the check is
// per pattern, and exact.
func uncovered(ps, by Patterns) Patterns {
	var out Patterns
	for _, p := range ps {
		if !coveredBy(p, by) {
			out = append(out, p)
		}
	}
	return out
}

func coveredBy(p Pattern, by Patterns) bool {
	for _, q := range by {
		if covers(q, p) {
			return true
		}
	}
	return false
}

// covers reports whether every collection p matches, q matches too.
func covers(q, p Pattern) bool {
	switch q.kind {
	case kindAll:
		return true
	case kindExact:
		return p.kind == kindExact && p.raw == q.raw
	case kindPrefix:
		switch p.kind {
		case kindExact:
			return q.Match(p.raw)
		case kindPrefix:
			return strings.HasPrefix(p.prefix, q.prefix)
		}
	}
	return false
}
