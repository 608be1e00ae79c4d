package filter

import (
	"errors"
	"reflect"
	"testing"
)

func mustCompile(t testing.TB, s Spec) *Filter {
	t.Helper()
	f, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCompileRefusesInvalid(t *testing.T) {
	f, err := Compile(Spec{DIDs: []string{"nope"}})
	if f != nil || !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("Compile = %v, %v", f, err)
	}
}

func TestFilterStores(t *testing.T) {
	tests := []struct {
		collections []string
		nsid        string
		want        bool
	}{
		{nil, "app.bsky.feed.post", true},
		{nil, "anything.at.all", true},
		{[]string{"*"}, "app.bsky.feed.post", true},
		{[]string{"app.bsky.feed.post"}, "app.bsky.feed.post", true},
		{[]string{"app.bsky.feed.post"}, "app.bsky.feed.like", false},
		{[]string{"app.bsky.graph.*"}, "app.bsky.graph.follow", true},
		{[]string{"app.bsky.graph.*"}, "app.bsky.graph", false},
		{[]string{"app.bsky.graph.*"}, "app.bsky.graphx", false},
		{[]string{"app.bsky.feed.post", "app.bsky.graph.*"}, "app.bsky.graph.list.item", true},
		{[]string{"app.bsky.feed.post", "app.bsky.graph.*"}, "xyz.statusphere.status", false},
	}
	for _, tt := range tests {
		f := mustCompile(t, Spec{Collections: tt.collections})
		if got := f.Stores(tt.nsid); got != tt.want {
			t.Errorf("Collections %q: Stores(%q) = %v, want %v", tt.collections, tt.nsid, got, tt.want)
		}
	}
}

func TestFilterIsSignal(t *testing.T) {
	none := mustCompile(t, Spec{})
	if none.IsSignal("app.bsky.feed.post") || none.HasSignals() {
		t.Error("a spec without signals has a signal")
	}
	f := mustCompile(t, Spec{Signals: []string{"xyz.statusphere.status", "sh.tangled.*"}})
	for nsid, want := range map[string]bool{
		"xyz.statusphere.status": true,
		"sh.tangled.repo":        true,
		"sh.tangled.repo.issue":  true,
		"sh.tangled":             false,
		"app.bsky.feed.post":     false,
	} {
		if got := f.IsSignal(nsid); got != want {
			t.Errorf("IsSignal(%q) = %v, want %v", nsid, got, want)
		}
	}
}

func TestFilterTracks(t *testing.T) {
	explicit := Spec{DIDs: []string{alice, bob}, Excludes: []string{bob}}
	signals := Spec{Signals: []string{"xyz.statusphere.status"}, Excludes: []string{bob}}
	full := Spec{FullNetwork: true, Excludes: []string{bob}}
	tests := []struct {
		name      string
		spec      Spec
		did       string
		hasSignal bool
		want      bool
	}{
		{"explicit", explicit, alice, false, true},
		{"explicit but excluded", explicit, bob, false, false},
		{"not listed", explicit, carol, false, false},
		{"not listed, signal record", explicit, carol, true, true},
		{"signal record", signals, carol, true, true},
		{"no signal record", signals, carol, false, false},
		{"excluded with signal record", signals, bob, true, false},
		{"full network", full, carol, false, true},
		{"full network excluded", full, bob, true, false},
		{"empty spec", Spec{}, alice, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustCompile(t, tt.spec)
			if got := f.Tracks(tt.did, tt.hasSignal); got != tt.want {
				t.Errorf("Tracks(%s, %v) = %v, want %v", tt.did, tt.hasSignal, got, tt.want)
			}
			if got, want := f.TracksWithoutSignal(tt.did), f.Tracks(tt.did, false); got != want {
				t.Errorf("TracksWithoutSignal = %v, Tracks(did, false) = %v", got, want)
			}
		})
	}
}

func TestFilterAccessors(t *testing.T) {
	spec := Spec{FullNetwork: true, DIDs: []string{bob, alice}, Excludes: []string{carol}}
	f := mustCompile(t, spec)
	if !f.FullNetwork() || !f.Explicit(alice) || !f.Explicit(bob) || f.Explicit(carol) {
		t.Error("FullNetwork/Explicit wrong")
	}
	if !f.Excluded(carol) || f.Excluded(alice) {
		t.Error("Excluded wrong")
	}
	got := f.Spec()
	if !reflect.DeepEqual(got, spec.Normalize()) {
		t.Errorf("Spec() = %+v", got)
	}
	got.DIDs[0] = "did:plc:mutated"
	spec.DIDs[0] = "did:plc:mutated"
	if f.Spec().DIDs[0] != alice || !f.Explicit(bob) {
		t.Error("Filter shares memory with its Spec or the returned copy")
	}
}

func TestFilterDoesNotAllocate(t *testing.T) {
	f := mustCompile(t, Spec{
		DIDs:        []string{alice},
		Signals:     []string{"xyz.statusphere.status"},
		Collections: []string{"app.bsky.feed.post", "app.bsky.graph.*"},
		Excludes:    []string{bob},
	})
	allocs := testing.AllocsPerRun(100, func() {
		f.Stores("app.bsky.graph.follow")
		f.Stores("app.bsky.feed.like")
		f.IsSignal("xyz.statusphere.status")
		f.Tracks(carol, false)
	})
	if allocs != 0 {
		t.Errorf("Filter lookups allocate %v times per run", allocs)
	}
}

func BenchmarkFilterStores(b *testing.B) {
	f := mustCompile(b, Spec{Collections: []string{
		"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.feed.repost",
		"app.bsky.graph.*", "xyz.statusphere.status", "sh.tangled.*",
	}})
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Stores("app.bsky.feed.repost")
		}
	})
	b.Run("prefix", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Stores("sh.tangled.repo.issue")
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Stores("app.bsky.actor.profile")
		}
	})
}

func BenchmarkFilterTracks(b *testing.B) {
	dids := make([]string, 10000)
	for i := range dids {
		dids[i] = "did:plc:" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26)) + "x"
	}
	f := mustCompile(b, Spec{DIDs: dids})
	b.ReportAllocs()
	for b.Loop() {
		f.Tracks(dids[1234], false)
	}
}
