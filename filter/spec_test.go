package filter

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const (
	alice = "did:plc:alice0000000000000000000"
	bob   = "did:plc:bob00000000000000000000"
	carol = "did:web:carol.example.com"
)

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		wantErr []string // substrings, one per expected error; nil means valid
	}{
		{name: "zero", spec: Spec{}},
		{name: "full", spec: Spec{
			FullNetwork: true,
			DIDs:        []string{alice, carol},
			Signals:     []string{"xyz.statusphere.status", "app.bsky.graph.*"},
			Collections: []string{"*"},
			Excludes:    []string{bob},
		}},
		{name: "bad did", spec: Spec{DIDs: []string{alice, "alice"}},
			wantErr: []string{`dids[1] "alice": invalid DID`}},
		{name: "bad exclude", spec: Spec{Excludes: []string{"did:plc:"}},
			wantErr: []string{`excludes[0] "did:plc:"`}},
		{name: "bad signal", spec: Spec{Signals: []string{"app.bsky.*.post"}},
			wantErr: []string{`signals[0] "app.bsky.*.post"`}},
		{name: "bad collection", spec: Spec{Collections: []string{"ok.example.thing", "app.bsky"}},
			wantErr: []string{`collections[1] "app.bsky"`}},
		{name: "several", spec: Spec{DIDs: []string{"x"}, Signals: []string{""}, Collections: []string{"a*"}, Excludes: []string{"y"}},
			wantErr: []string{`dids[0] "x"`, `signals[0] ""`, `collections[0] "a*"`, `excludes[0] "y"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: want error")
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("%v does not wrap ErrInvalidSpec", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tt.wantErr) {
				t.Errorf("got %d errors, want %d: %v", n, len(tt.wantErr), err)
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Errorf("%v is not a *SpecError", err)
			}
		})
	}
}

func TestSpecErrorWrapsPatternError(t *testing.T) {
	err := Spec{Collections: []string{"a.b.*c"}}.Validate()
	if !errors.Is(err, ErrInvalidPattern) {
		t.Fatalf("%v does not wrap ErrInvalidPattern", err)
	}
	var se *SpecError
	if !errors.As(err, &se) || se.Field != "collections" || se.Index != 0 || se.Value != "a.b.*c" {
		t.Fatalf("SpecError = %+v", se)
	}
}

func TestSpecNormalize(t *testing.T) {
	in := Spec{
		DIDs:        []string{bob, alice, bob},
		Signals:     []string{},
		Collections: []string{"b.c.d", "a.b.*", "b.c.d"},
		Excludes:    []string{carol},
	}
	orig := in.Clone()
	got := in.Normalize()
	want := Spec{
		DIDs:        []string{alice, bob},
		Collections: []string{"a.b.*", "b.c.d"},
		Excludes:    []string{carol},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Normalize() = %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(in, orig) {
		t.Errorf("Normalize modified its receiver: %+v", in)
	}
	if !in.Equal(want) || in.Equal(Spec{}) {
		t.Error("Equal disagrees with Normalize")
	}
}

func TestSpecEncodeDecode(t *testing.T) {
	a := Spec{FullNetwork: true, DIDs: []string{bob, alice}, Signals: []string{"app.bsky.graph.*"}}
	b := Spec{FullNetwork: true, DIDs: []string{alice, bob, alice}, Signals: []string{"app.bsky.graph.*"}}
	ea, err := a.Encode()
	if err != nil {
		t.Fatal(err)
	}
	eb, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if string(ea) != string(eb) {
		t.Errorf("equal specs encode differently: %s vs %s", ea, eb)
	}
	want := `{"fullNetwork":true,"dids":["` + alice + `","` + bob + `"],"signals":["app.bsky.graph.*"]}`
	if string(ea) != want {
		t.Errorf("Encode() = %s, want %s", ea, want)
	}
	got, err := DecodeSpec(ea)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a.Normalize()) {
		t.Errorf("DecodeSpec = %+v", got)
	}

	for _, bad := range []string{`{"dids":["nope"]}`, `{"collections":"x"}`, `not json`} {
		if _, err := DecodeSpec([]byte(bad)); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("DecodeSpec(%s) = %v, want ErrInvalidSpec", bad, err)
		}
	}
	// Unknown fields from a newer version are ignored.
	if _, err := DecodeSpec([]byte(`{"dids":["` + alice + `"],"future":1}`)); err != nil {
		t.Errorf("unknown field: %v", err)
	}
}

func TestSpecApply(t *testing.T) {
	base := Spec{
		DIDs:        []string{alice},
		Signals:     []string{"xyz.statusphere.status"},
		Collections: []string{"xyz.statusphere.status"},
	}
	yes, no := true, false
	tests := []struct {
		name    string
		patch   Patch
		want    Spec
		wantErr error
	}{
		{name: "zero patch", patch: Patch{}, want: base},
		{name: "add and remove dids", patch: Patch{AddDIDs: []string{bob, carol}, RemoveDIDs: []string{alice}},
			want: Spec{DIDs: []string{bob, carol}, Signals: base.Signals, Collections: base.Collections}},
		{name: "remove absent", patch: Patch{RemoveDIDs: []string{bob}, RemoveExcludes: []string{carol}}, want: base},
		{name: "add signals", patch: Patch{AddSignals: []string{"app.bsky.feed.post", "app.bsky.graph.*"}},
			want: Spec{DIDs: base.DIDs, Signals: []string{"app.bsky.feed.post", "app.bsky.graph.*", "xyz.statusphere.status"}, Collections: base.Collections}},
		{name: "remove every signal", patch: Patch{RemoveSignals: []string{"xyz.statusphere.status"}},
			want: Spec{DIDs: base.DIDs, Collections: base.Collections}},
		{name: "swap collections", patch: Patch{AddCollections: []string{"*"}, RemoveCollections: []string{"xyz.statusphere.status"}},
			want: Spec{DIDs: base.DIDs, Signals: base.Signals, Collections: []string{"*"}}},
		{name: "remove and add same", patch: Patch{AddDIDs: []string{alice}, RemoveDIDs: []string{alice}}, want: base},
		{name: "excludes unconfirmed", patch: Patch{AddExcludes: []string{bob}}, wantErr: ErrDeleteNotConfirmed},
		{name: "excludes", patch: Patch{AddExcludes: []string{bob}, ConfirmDelete: true},
			want: Spec{DIDs: base.DIDs, Signals: base.Signals, Collections: base.Collections, Excludes: []string{bob}}},
		{name: "full network on", patch: Patch{FullNetwork: &yes},
			want: Spec{FullNetwork: true, DIDs: base.DIDs, Signals: base.Signals, Collections: base.Collections}},
		{name: "full network off", patch: Patch{FullNetwork: &no}, want: base},
		{name: "narrow unconfirmed", patch: Patch{AddCollections: []string{"app.bsky.feed.post"}, RemoveCollections: []string{"xyz.statusphere.status"}},
			wantErr: ErrDeleteNotConfirmed},
		{name: "narrow confirmed", patch: Patch{AddCollections: []string{"app.bsky.feed.post"}, RemoveCollections: []string{"xyz.statusphere.status"}, ConfirmDelete: true},
			want: Spec{DIDs: base.DIDs, Signals: base.Signals, Collections: []string{"app.bsky.feed.post"}}},
		{name: "confirm without deletion", patch: Patch{AddDIDs: []string{bob}, ConfirmDelete: true},
			want: Spec{DIDs: []string{alice, bob}, Signals: base.Signals, Collections: base.Collections}},
		{name: "remove last collection", patch: Patch{RemoveCollections: []string{"xyz.statusphere.status"}}, wantErr: ErrNoCollections},
		{name: "bad did", patch: Patch{AddDIDs: []string{"bob"}}, wantErr: ErrInvalidSpec},
		{name: "bad exclude", patch: Patch{AddExcludes: []string{"bob"}}, wantErr: ErrInvalidSpec},
		{name: "bad signal", patch: Patch{AddSignals: []string{"x*"}}, wantErr: ErrInvalidPattern},
		{name: "bad collection", patch: Patch{AddCollections: []string{"x*"}}, wantErr: ErrInvalidPattern},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := base.Clone()
			got, err := base.Apply(tt.patch)
			if !reflect.DeepEqual(base, before) {
				t.Fatalf("Apply modified its receiver")
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Apply = %+v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want.Normalize()) {
				t.Errorf("Apply = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Adding collections to a filter that stores every collection never
// narrows it: everything stays stored. Narrowing from "all" takes removing
// "*" explicitly, and confirming the deletion.
func TestSpecApply_AddToAllNeverNarrows(t *testing.T) {
	graph := []string{"app.bsky.graph.*"}
	tests := []struct {
		name    string
		from    Spec
		patch   Patch
		want    []string // Collections of the result
		wantErr error
	}{
		{name: "empty list", from: Spec{}, patch: Patch{AddCollections: graph}, want: nil},
		{name: "empty list, confirmed", from: Spec{}, patch: Patch{AddCollections: graph, ConfirmDelete: true}, want: nil},
		{name: "star", from: Spec{Collections: []string{"*"}}, patch: Patch{AddCollections: graph}, want: []string{"*"}},
		{name: "star and more", from: Spec{Collections: []string{"*", "a.b.c"}}, patch: Patch{AddCollections: graph, RemoveCollections: []string{"a.b.c"}}, want: []string{"*"}},
		{name: "add star to all", from: Spec{}, patch: Patch{AddCollections: []string{"*"}}, want: nil},
		{name: "remove star, unconfirmed", from: Spec{}, patch: Patch{RemoveCollections: []string{"*"}, AddCollections: graph}, wantErr: ErrDeleteNotConfirmed},
		{name: "remove star, confirmed", from: Spec{}, patch: Patch{RemoveCollections: []string{"*"}, AddCollections: graph, ConfirmDelete: true}, want: graph},
		{name: "remove star alone", from: Spec{}, patch: Patch{RemoveCollections: []string{"*"}, ConfirmDelete: true}, wantErr: ErrNoCollections},
		{name: "remove absent from all", from: Spec{}, patch: Patch{RemoveCollections: []string{"a.b.c"}}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.from.Apply(tt.patch)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Apply = %+v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Collections, tt.want) {
				t.Errorf("Collections = %q, want %q", got.Collections, tt.want)
			}
			c, err := Diff(tt.from, got)
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.want) == 0 || tt.want[0] == "*" {
				if c.CollectionsNarrowed || c.Deletes() {
					t.Errorf("adding to all narrowed: removed %v", c.CollectionsRemoved.Strings())
				}
			}
		})
	}
}

func TestDeleteErrorNamesWhatIsDeleted(t *testing.T) {
	_, err := Spec{DIDs: []string{alice}}.Apply(Patch{
		RemoveCollections: []string{"*"}, AddCollections: []string{"app.bsky.graph.*"}, AddExcludes: []string{bob},
	})
	var de *DeleteError
	if !errors.As(err, &de) || !errors.Is(err, ErrDeleteNotConfirmed) {
		t.Fatalf("Apply = %v; want a *DeleteError", err)
	}
	if !reflect.DeepEqual(de.Collections, []string{"*"}) || !reflect.DeepEqual(de.Kept, []string{"app.bsky.graph.*"}) || !reflect.DeepEqual(de.DIDs, []string{bob}) {
		t.Errorf("DeleteError = %+v", de)
	}
	for _, w := range []string{`["*"]`, `["app.bsky.graph.*"]`, bob, "confirmDelete"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}

func TestPatchValidateNamesField(t *testing.T) {
	err := Patch{AddDIDs: []string{alice, "zz"}, AddSignals: []string{"q*"}}.Validate()
	for _, w := range []string{`addDids[1] "zz"`, `addSignals[0] "q*"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not contain %q", err, w)
		}
	}
}
