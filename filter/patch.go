package filter

import (
	"errors"
	"slices"
)

// Patch is a runtime change to a Spec: entries to add to and remove from each
// list, and optionally a new FullNetwork value. The zero Patch changes
// nothing. Its JSON form (lower camel) is the one the HTTP API accepts.
type Patch struct {
	// FullNetwork, when not nil, replaces Spec.FullNetwork.
	FullNetwork *bool `json:"fullNetwork,omitempty"`

	AddDIDs           []string `json:"addDids,omitempty"`
	RemoveDIDs        []string `json:"removeDids,omitempty"`
	AddSignals        []string `json:"addSignals,omitempty"`
	RemoveSignals     []string `json:"removeSignals,omitempty"`
	AddCollections    []string `json:"addCollections,omitempty"`
	RemoveCollections []string `json:"removeCollections,omitempty"`
	AddExcludes       []string `json:"addExcludes,omitempty"`
	RemoveExcludes    []string `json:"removeExcludes,omitempty"`
}

// Validate checks every entry the patch adds (DIDs with syntax.ParseDID,
// patterns with ParsePattern). Removals are not checked: removing an entry
// that is not there is not an error. Errors are *SpecError (Field is the
// patch field's JSON name), joined with errors.Join when there are several.
// A list longer than MaxPatterns or MaxDIDs is refused first, with a
// *SizeError.
func (p Patch) Validate() error {
	if err := p.checkSizes(); err != nil {
		return err
	}
	var errs []error
	errs = validateDIDs(errs, "addDids", p.AddDIDs)
	errs = validatePatterns(errs, "addSignals", p.AddSignals)
	errs = validatePatterns(errs, "addCollections", p.AddCollections)
	errs = validateDIDs(errs, "addExcludes", p.AddExcludes)
	return errors.Join(errs...)
}

// Apply returns s changed by p, normalized; s itself is not modified. In each
// list the removals are applied first, then the additions, so an entry both
// removed and added is kept. Removing an absent entry is not an error.
//
// Apply fails, and returns the zero Spec, when the patch adds an invalid
// entry, when the result does not validate, or with ErrNoCollections when s
// had collection patterns and the patch removes all of them (an empty
// Collections would mean every collection).
func (s Spec) Apply(p Patch) (Spec, error) {
	if err := p.Validate(); err != nil {
		return Spec{}, err
	}
	out := Spec{
		FullNetwork: s.FullNetwork,
		DIDs:        patchList(s.DIDs, p.AddDIDs, p.RemoveDIDs),
		Signals:     patchList(s.Signals, p.AddSignals, p.RemoveSignals),
		Collections: patchList(s.Collections, p.AddCollections, p.RemoveCollections),
		Excludes:    patchList(s.Excludes, p.AddExcludes, p.RemoveExcludes),
	}
	if p.FullNetwork != nil {
		out.FullNetwork = *p.FullNetwork
	}
	if len(s.Collections) > 0 && len(out.Collections) == 0 {
		return Spec{}, ErrNoCollections
	}
	if err := out.Validate(); err != nil {
		return Spec{}, err
	}
	return out.Normalize(), nil
}

func patchList(list, add, remove []string) []string {
	drop := make(map[string]struct{}, len(remove))
	for _, v := range remove {
		drop[v] = struct{}{}
	}
	out := slices.DeleteFunc(slices.Clone(list), func(v string) bool {
		_, ok := drop[v]
		return ok
	})
	return sortedSet(append(out, add...))
}
