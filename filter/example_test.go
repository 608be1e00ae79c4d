package filter_test

import (
	"errors"
	"fmt"

	"github.com/cistern-dev/cistern/filter"
)

func ExampleParsePattern() {
	p, err := filter.ParsePattern("app.bsky.graph.*")
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Match("app.bsky.graph.follow"))
	fmt.Println(p.Match("app.bsky.graph"))
	fmt.Println(p.Match("app.bsky.graphx"))

	_, err = filter.ParsePattern("app.bsky.*.post")
	fmt.Println(errors.Is(err, filter.ErrInvalidPattern))
	// Output:
	// true
	// false
	// false
	// true
}

func ExampleCompile() {
	f, err := filter.Compile(filter.Spec{
		Signals:     []string{"xyz.statusphere.status"},
		Collections: []string{"xyz.statusphere.status", "app.bsky.actor.*"},
		Excludes:    []string{"did:plc:spammer00000000000000000"},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(f.IsSignal("xyz.statusphere.status"))
	fmt.Println(f.Stores("app.bsky.actor.profile"), f.Stores("app.bsky.feed.post"))
	fmt.Println(f.Tracks("did:plc:alice0000000000000000000", true))
	fmt.Println(f.Tracks("did:plc:spammer00000000000000000", true))
	// Output:
	// true
	// true false
	// true
	// false
}

func ExampleSpec_Apply() {
	spec := filter.Spec{Collections: []string{"xyz.statusphere.status"}}
	next, err := spec.Apply(filter.Patch{AddCollections: []string{"app.bsky.feed.post"}})
	if err != nil {
		panic(err)
	}
	change, err := filter.Diff(spec, next)
	if err != nil {
		panic(err)
	}
	fmt.Println(next.Collections)
	fmt.Println(change.CollectionsWidened(), change.CollectionsAdded.Strings())
	// Output:
	// [app.bsky.feed.post xyz.statusphere.status]
	// true [app.bsky.feed.post]
}

// A patch that would delete stored records is refused unless it says so.
// Adding collections to a filter that stores every collection changes
// nothing; storing only some takes removing "*".
func ExamplePatch_ConfirmDelete() {
	all := filter.Spec{DIDs: []string{"did:plc:alice0000000000000000000"}}
	next, err := all.Apply(filter.Patch{AddCollections: []string{"app.bsky.graph.*"}})
	fmt.Println(next.Collections == nil, err)

	narrow := filter.Patch{RemoveCollections: []string{"*"}, AddCollections: []string{"app.bsky.graph.*"}}
	_, err = all.Apply(narrow)
	fmt.Println(errors.Is(err, filter.ErrDeleteNotConfirmed))

	narrow.ConfirmDelete = true
	next, err = all.Apply(narrow)
	fmt.Println(next.Collections, err)
	// Output:
	// true <nil>
	// true
	// [app.bsky.graph.*] <nil>
}
