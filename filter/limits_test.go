package filter_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/filter"
)

func patterns(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("com.example.c%d", i)
	}
	return out
}

func dids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("did:web:h%d.example", i)
	}
	return out
}

// Lists beyond MaxPatterns and MaxDIDs are refused with a SizeError naming
// the list; lists at the bound are accepted.
func TestSizeBounds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		field string
	}{
		{"collections at the bound", filter.Spec{Collections: patterns(filter.MaxPatterns)}.Validate(), ""},
		{"signals at the bound", filter.Spec{Signals: patterns(filter.MaxPatterns)}.Validate(), ""},
		{"dids at the bound", filter.Spec{DIDs: dids(filter.MaxDIDs)}.Validate(), ""},
		{"20,000 collections", filter.Spec{Collections: patterns(20000)}.Validate(), "collections"},
		{"signals", filter.Spec{Signals: patterns(filter.MaxPatterns + 1)}.Validate(), "signals"},
		{"dids", filter.Spec{DIDs: dids(filter.MaxDIDs + 1)}.Validate(), "dids"},
		{"excludes", filter.Spec{Excludes: dids(filter.MaxDIDs + 1)}.Validate(), "excludes"},
		{"patch addCollections", filter.Patch{AddCollections: patterns(filter.MaxPatterns + 1)}.Validate(), "addCollections"},
		{"patch removeDids", filter.Patch{RemoveDIDs: dids(filter.MaxDIDs + 1)}.Validate(), "removeDids"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.field == "" {
				if tc.err != nil {
					t.Fatalf("refused: %v", tc.err)
				}
				return
			}
			var se *filter.SizeError
			if !errors.As(tc.err, &se) || se.Field != tc.field || !errors.Is(tc.err, filter.ErrInvalidSpec) || !errors.Is(tc.err, filter.ErrTooLarge) {
				t.Fatalf("err %v, want a SizeError for %s", tc.err, tc.field)
			}
			if !strings.Contains(tc.err.Error(), tc.field) || !strings.Contains(tc.err.Error(), fmt.Sprint(se.Max)) {
				t.Fatalf("message %q names neither the list nor the bound", tc.err)
			}
		})
	}
	// A patch that pushes a list past its bound is refused too.
	s := filter.Spec{Collections: patterns(filter.MaxPatterns)}
	if _, err := s.Apply(filter.Patch{AddCollections: []string{"com.example.more"}}); !errors.Is(err, filter.ErrTooLarge) {
		t.Fatalf("Apply past the bound: %v", err)
	}
}

// Removing many DIDs from a long list is not quadratic: this patch would
// make 10^10 comparisons with a linear search.
func TestApply_LongDIDLists(t *testing.T) {
	s := filter.Spec{DIDs: dids(filter.MaxDIDs)}
	out, err := s.Apply(filter.Patch{RemoveDIDs: dids(filter.MaxDIDs)[:filter.MaxDIDs-1]})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.DIDs) != 1 || out.DIDs[0] != dids(filter.MaxDIDs)[filter.MaxDIDs-1] {
		t.Fatalf("left %d DIDs", len(out.DIDs))
	}
}
