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

	AddDIDs        []string `json:"addDids,omitempty"`
	RemoveDIDs     []string `json:"removeDids,omitempty"`
	AddSignals     []string `json:"addSignals,omitempty"`
	RemoveSignals  []string `json:"removeSignals,omitempty"`
	AddCollections []string `json:"addCollections,omitempty"`
	// RemoveCollections are removed before AddCollections are added. A
	// Spec that stores every collection (Collections empty, or holding "*")
	// is treated as holding "*": remove "*" to store fewer collections.
	RemoveCollections []string `json:"removeCollections,omitempty"`
	AddExcludes       []string `json:"addExcludes,omitempty"`
	RemoveExcludes    []string `json:"removeExcludes,omitempty"`

	// ConfirmDelete says that the caller knows the patch deletes stored
	// records and wants it anyway. A patch that narrows the stored
	// collections or adds an exclude deletes records (the records of the
	// collections no longer stored, all the records of the excluded DIDs);
	// without ConfirmDelete, Apply refuses it with a *DeleteError naming
	// them. A patch that deletes nothing ignores it.
	ConfirmDelete bool `json:"confirmDelete,omitempty"`
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
// Adding collections never narrows: when s stores every collection (its
// Collections is empty or holds "*") and p does not remove "*", the added
// patterns change nothing (everything is already stored) and the result
// still stores every collection, in the same form as s. To store only some
// collections instead of all, remove "*" and add them in one patch (with
// ConfirmDelete, since the other collections' records are deleted).
//
// Apply fails, and returns the zero Spec:
//   - when the patch adds an invalid entry or the result does not validate
//     (errors wrapping ErrInvalidSpec);
//   - with ErrNoCollections when s stored some collections and the patch
//     removes all of them (an empty Collections would mean every
//     collection);
//   - with a *DeleteError (wrapping ErrDeleteNotConfirmed) when the change
//     from s to the result deletes stored records (see Change.Deletes) and
//     p.ConfirmDelete is not set.
func (s Spec) Apply(p Patch) (Spec, error) {
	if err := p.Validate(); err != nil {
		return Spec{}, err
	}
	out := Spec{
		FullNetwork: s.FullNetwork,
		DIDs:        patchList(s.DIDs, p.AddDIDs, p.RemoveDIDs),
		Signals:     patchList(s.Signals, p.AddSignals, p.RemoveSignals),
		Collections: patchCollections(s.Collections, p.AddCollections, p.RemoveCollections),
		Excludes:    patchList(s.Excludes, p.AddExcludes, p.RemoveExcludes),
	}
	if p.FullNetwork != nil {
		out.FullNetwork = *p.FullNetwork
	}
	if out.Collections != nil && len(out.Collections) == 0 {
		return Spec{}, ErrNoCollections
	}
	if err := out.Validate(); err != nil {
		return Spec{}, err
	}
	out = out.Normalize()
	if !p.ConfirmDelete {
		change, err := Diff(s, out)
		if err != nil {
			return Spec{}, err
		}
		if err := change.CheckConfirmed(false); err != nil {
			return Spec{}, err
		}
	}
	return out, nil
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

// patchCollections patches a Collections list, where empty means "*". It
// returns nil for "every collection, as an empty list", and an empty non-nil
// slice when the patch removed every pattern of a list that had some.
func patchCollections(list, add, remove []string) []string {
	if storesAll(list) && !slices.Contains(remove, "*") {
		// Everything is stored and stays stored: additions change nothing.
		return sortedSet(slices.DeleteFunc(slices.Clone(list), func(v string) bool {
			return slices.Contains(remove, v)
		}))
	}
	if len(list) == 0 {
		list = []string{"*"}
	}
	out := patchList(list, add, remove)
	if out == nil {
		return []string{}
	}
	return out
}

// storesAll reports whether a Collections list selects every collection.
func storesAll(collections []string) bool {
	return len(collections) == 0 || slices.Contains(collections, "*")
}
