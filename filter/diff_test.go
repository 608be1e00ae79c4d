package filter

import (
	"reflect"
	"testing"
)

func TestDiffCollections(t *testing.T) {
	tests := []struct {
		name     string
		old, new []string
		added    []string // CollectionsAdded
		narrowed bool
		removed  map[string]bool // collection -> Removed
	}{
		{name: "same", old: []string{"a.b.c"}, new: []string{"a.b.c"}},
		{name: "all to all", old: nil, new: []string{"*"}},
		{name: "add exact", old: []string{"a.b.c"}, new: []string{"a.b.c", "a.b.d"}, added: []string{"a.b.d"}},
		{name: "exact under old wildcard", old: []string{"a.b.*"}, new: []string{"a.b.*", "a.b.d"}},
		{name: "wildcard widens exact", old: []string{"a.b.c"}, new: []string{"a.b.*"}, added: []string{"a.b.*"},
			narrowed: false, removed: map[string]bool{"a.b.c": false}},
		{name: "wildcard narrows", old: []string{"a.*"}, new: []string{"a.b.*"}, narrowed: true,
			removed: map[string]bool{"a.c.d": true, "a.b.c": false}},
		{name: "to all", old: []string{"a.b.c"}, new: nil, added: []string{"*"}},
		{name: "from all", old: nil, new: []string{"a.b.c"}, narrowed: true,
			removed: map[string]bool{"a.b.c": false, "x.y.z": true}},
		{name: "swap", old: []string{"a.b.c"}, new: []string{"x.y.z"}, added: []string{"x.y.z"}, narrowed: true,
			removed: map[string]bool{"a.b.c": true, "x.y.z": false}},
		{name: "segment boundary", old: []string{"a.b.*"}, new: []string{"a.bc.*"}, added: []string{"a.bc.*"}, narrowed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Diff(Spec{Collections: tt.old}, Spec{Collections: tt.new})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.CollectionsAdded.Strings(); !reflect.DeepEqual(got, nonNil(tt.added)) {
				t.Errorf("CollectionsAdded = %q, want %q", got, tt.added)
			}
			if c.CollectionsWidened() != (len(tt.added) > 0) {
				t.Errorf("CollectionsWidened = %v", c.CollectionsWidened())
			}
			if c.CollectionsNarrowed != tt.narrowed {
				t.Errorf("CollectionsNarrowed = %v, want %v", c.CollectionsNarrowed, tt.narrowed)
			}
			if c.Deletes() != tt.narrowed || (len(c.CollectionsRemoved) > 0) != tt.narrowed {
				t.Errorf("Deletes = %v, CollectionsRemoved = %v; want narrowed %v", c.Deletes(), c.CollectionsRemoved.Strings(), tt.narrowed)
			}
			if err := c.CheckConfirmed(false); (err != nil) != tt.narrowed {
				t.Errorf("CheckConfirmed(false) = %v", err)
			}
			if err := c.CheckConfirmed(true); err != nil {
				t.Errorf("CheckConfirmed(true) = %v", err)
			}
			for coll, want := range tt.removed {
				if got := c.Removed(coll); got != want {
					t.Errorf("Removed(%q) = %v, want %v", coll, got, want)
				}
			}
			for _, a := range tt.added {
				if a != "*" && !c.Added(a) && !c.New.Stores(a) {
					t.Errorf("Added(%q) false", a)
				}
			}
		})
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestDiffAdded(t *testing.T) {
	c, err := Diff(Spec{Collections: []string{"a.b.c"}}, Spec{Collections: []string{"a.b.*"}})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Added("a.b.d") || c.Added("a.b.c") || c.Added("x.y.z") {
		t.Error("Added wrong")
	}
}

func TestDiffSignals(t *testing.T) {
	c, err := Diff(
		Spec{Signals: []string{"xyz.statusphere.status", "app.bsky.graph.*"}},
		Spec{Signals: []string{"app.bsky.graph.follow", "sh.tangled.*"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SignalsAdded.Strings(); !reflect.DeepEqual(got, []string{"sh.tangled.*"}) {
		t.Errorf("SignalsAdded = %q", got)
	}
	if got := c.SignalsRemoved.Strings(); !reflect.DeepEqual(got, []string{"app.bsky.graph.*", "xyz.statusphere.status"}) {
		t.Errorf("SignalsRemoved = %q", got)
	}
}

func TestDiffDIDs(t *testing.T) {
	const dave = "did:plc:dave0000000000000000000"
	old := Spec{DIDs: []string{alice, bob, dave}, Excludes: []string{carol, dave}}
	new := Spec{DIDs: []string{bob, carol, dave}, Excludes: []string{bob}}
	c, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want []string) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	check("Tracked", c.Tracked, []string{dave, carol}) // carol newly listed and unexcluded; dave unexcluded
	check("Untracked", c.Untracked, []string{alice})   // bob went to Excluded instead
	check("Excluded", c.Excluded, []string{bob})
	check("Unexcluded", c.Unexcluded, []string{dave, carol})
	if c.IsZero() {
		t.Error("IsZero")
	}
}

func TestDiffFullNetwork(t *testing.T) {
	on, off := Spec{FullNetwork: true}, Spec{}
	c, _ := Diff(off, on)
	if !c.FullNetworkStarted || c.FullNetworkStopped {
		t.Errorf("off->on: %+v", c)
	}
	c, _ = Diff(on, off)
	if c.FullNetworkStarted || !c.FullNetworkStopped {
		t.Errorf("on->off: %+v", c)
	}
	c, _ = Diff(on, on)
	if !c.IsZero() {
		t.Errorf("on->on not zero: %+v", c)
	}
}

func TestDiffNoChange(t *testing.T) {
	s := Spec{DIDs: []string{alice}, Signals: []string{"a.b.c"}, Collections: []string{"a.*"}, Excludes: []string{bob}}
	c, err := Diff(s, s.Normalize())
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsZero() {
		t.Errorf("Diff of equal specs: %+v", c)
	}
}

func TestDiffInvalid(t *testing.T) {
	if _, err := Diff(Spec{}, Spec{DIDs: []string{"x"}}); err == nil {
		t.Error("invalid new spec accepted")
	}
	if _, err := Diff(Spec{Signals: []string{"x*"}}, Spec{}); err == nil {
		t.Error("invalid old spec accepted")
	}
}
