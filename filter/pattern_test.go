package filter

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in       string
		wildcard bool
		wantErr  string // substring of the error; "" means valid
	}{
		{in: "app.bsky.feed.post"},
		{in: "xyz.statusphere.status"},
		{in: "com.example.fooBar"},
		{in: "app.bsky.graph.*", wildcard: true},
		{in: "app.*", wildcard: true},
		{in: "a-0.b-1.*", wildcard: true},
		{in: "*", wildcard: true},
		{in: "", wantErr: "empty pattern"},
		{in: ".*", wantErr: "empty prefix"},
		{in: "app.bsky.graph*", wantErr: "wildcard is allowed only"},
		{in: "app.bsky.*.post", wantErr: "wildcard is allowed only"},
		{in: "app.bsky.gr*ph.follow", wantErr: "wildcard is allowed only"},
		{in: "app.bsky.graph.**", wantErr: "wildcard is allowed only"},
		{in: "**", wantErr: "wildcard is allowed only"},
		{in: "app..bsky.*", wantErr: "empty segment 2"},
		{in: "app.bsky..*", wantErr: "empty segment 3"},
		{in: "1app.bsky.*", wantErr: "must start with a letter"},
		{in: "app.-bsky.*", wantErr: "hyphen"},
		{in: "app.bsky-.*", wantErr: "hyphen"},
		{in: "app.b_sky.*", wantErr: `contains '_'`},
		{in: "app.bsky.graph. *", wantErr: "wildcard is allowed only"},
		{in: "app." + strings.Repeat("o", 64) + ".*", wantErr: "longer than 63"},
		{in: strings.Repeat("abc.", 80) + "*", wantErr: "prefix too long"},
		{in: "app.bsky", wantErr: "not a valid NSID"},
		{in: "app.bsky.feed.post ", wantErr: "not a valid NSID"},
		{in: "app.bsky.feed.p@st", wantErr: "not a valid NSID"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePattern(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParsePattern(%q) = %v, want error containing %q", tt.in, p, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidPattern) {
					t.Errorf("error %v does not wrap ErrInvalidPattern", err)
				}
				var pe *PatternError
				if !errors.As(err, &pe) || pe.Pattern != tt.in {
					t.Errorf("error %v is not a *PatternError for %q", err, tt.in)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tt.in, err)
			}
			if p.String() != tt.in {
				t.Errorf("String() = %q, want %q", p.String(), tt.in)
			}
			if p.IsWildcard() != tt.wildcard {
				t.Errorf("IsWildcard() = %v, want %v", p.IsWildcard(), tt.wildcard)
			}
		})
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		nsid    string
		want    bool
	}{
		{"app.bsky.feed.post", "app.bsky.feed.post", true},
		{"app.bsky.feed.post", "app.bsky.feed.posts", false},
		{"app.bsky.feed.post", "app.bsky.feed.pos", false},
		{"app.bsky.feed.post", "app.bsky.feed.post.x", false},
		{"app.bsky.feed.post", "App.bsky.feed.post", false},
		{"app.bsky.feed.post", "", false},
		{"app.bsky.graph.*", "app.bsky.graph.follow", true},
		{"app.bsky.graph.*", "app.bsky.graph.x.y", true},
		{"app.bsky.graph.*", "app.bsky.graph.", false},
		{"app.bsky.graph.*", "app.bsky.graph", false},
		{"app.bsky.graph.*", "app.bsky.graphx", false},
		{"app.bsky.graph.*", "app.bsky.graphx.follow", false},
		{"app.bsky.graph.*", "app.bsky.feed.post", false},
		{"app.bsky.graph.*", "", false},
		{"app.*", "app.bsky.feed.post", true},
		{"app.*", "apple.bsky.feed.post", false},
		{"*", "app.bsky.feed.post", true},
		{"*", "xyz.statusphere.status", true},
	}
	for _, tt := range tests {
		p := MustParsePattern(tt.pattern)
		if got := p.Match(tt.nsid); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.nsid, got, tt.want)
		}
	}
	var zero Pattern
	if zero.Match("app.bsky.feed.post") || zero.Match("") {
		t.Error("zero Pattern matched something")
	}
}

func TestPatternsMatch(t *testing.T) {
	ps, err := ParsePatterns([]string{"app.bsky.feed.post", "app.bsky.graph.*"})
	if err != nil {
		t.Fatal(err)
	}
	for nsid, want := range map[string]bool{
		"app.bsky.feed.post":    true,
		"app.bsky.graph.follow": true,
		"app.bsky.graph.block":  true,
		"app.bsky.feed.like":    false,
		"app.bsky.graph":        false,
	} {
		if got := ps.Match(nsid); got != want {
			t.Errorf("Match(%q) = %v, want %v", nsid, got, want)
		}
	}
	if got := ps.Strings(); len(got) != 2 || got[0] != "app.bsky.feed.post" || got[1] != "app.bsky.graph.*" {
		t.Errorf("Strings() = %q", got)
	}
	var empty Patterns
	if empty.Match("app.bsky.feed.post") {
		t.Error("empty Patterns matched")
	}
}

func TestParsePatternsJoinsErrors(t *testing.T) {
	ps, err := ParsePatterns([]string{"app.bsky.feed.post", "bad*", "also..bad"})
	if err == nil {
		t.Fatal("want error")
	}
	if ps != nil {
		t.Errorf("got patterns %v with an error", ps)
	}
	if !errors.Is(err, ErrInvalidPattern) {
		t.Errorf("%v does not wrap ErrInvalidPattern", err)
	}
	for _, s := range []string{`"bad*"`, `"also..bad"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
}

func TestPatternTextRoundTrip(t *testing.T) {
	for _, s := range []string{"app.bsky.feed.post", "app.bsky.graph.*", "*"} {
		b, err := MustParsePattern(s).MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var p Pattern
		if err := p.UnmarshalText(b); err != nil {
			t.Fatal(err)
		}
		if p != MustParsePattern(s) {
			t.Errorf("round trip of %q gave %#v", s, p)
		}
	}
	var p Pattern
	if err := p.UnmarshalText([]byte("no*good")); !errors.Is(err, ErrInvalidPattern) {
		t.Errorf("UnmarshalText of a bad pattern: %v", err)
	}
}

// readFixture returns the non-empty, non-comment lines of an interop fixture,
// keeping leading and trailing whitespace (some invalid cases rely on it).
func readFixture(t *testing.T, name string) []string {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 {
		t.Fatalf("fixture %s is empty", name)
	}
	return lines
}

func TestInteropValidNSIDs(t *testing.T) {
	for _, nsid := range readFixture(t, "nsid_syntax_valid.txt") {
		p, err := ParsePattern(nsid)
		if err != nil {
			t.Errorf("valid NSID %q refused: %v", nsid, err)
			continue
		}
		if p.IsWildcard() || !p.Match(nsid) {
			t.Errorf("exact pattern %q does not match itself", nsid)
		}
		// The NSID's authority, as a wildcard, matches the NSID too.
		prefix := nsid[:strings.LastIndexByte(nsid, '.')]
		w, err := ParsePattern(prefix + ".*")
		if err != nil {
			t.Errorf("wildcard %q refused: %v", prefix+".*", err)
			continue
		}
		if !w.Match(nsid) || w.Match(prefix) {
			t.Errorf("wildcard %q: Match(%q)=%v Match(%q)=%v", w, nsid, w.Match(nsid), prefix, w.Match(prefix))
		}
	}
}

func TestInteropInvalidNSIDs(t *testing.T) {
	for _, nsid := range readFixture(t, "nsid_syntax_invalid.txt") {
		p, err := ParsePattern(nsid)
		if strings.HasSuffix(nsid, ".*") {
			// Not an NSID, but a valid pattern when the prefix is valid.
			if err == nil && !p.IsWildcard() {
				t.Errorf("%q parsed as an exact pattern", nsid)
			}
			continue
		}
		if err == nil {
			t.Errorf("invalid NSID %q accepted as %v", nsid, p)
		} else if !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("%q: error %v does not wrap ErrInvalidPattern", nsid, err)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	ps, err := ParsePatterns([]string{"app.bsky.feed.post", "app.bsky.graph.*", "xyz.statusphere.status"})
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		ps.Match("app.bsky.graph.follow")
		ps.Match("app.bsky.feed.like")
	})
	if allocs != 0 {
		t.Errorf("Patterns.Match allocates %v times per run", allocs)
	}
}

func BenchmarkPatternMatch(b *testing.B) {
	exact := MustParsePattern("app.bsky.feed.post")
	wild := MustParsePattern("app.bsky.graph.*")
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			exact.Match("app.bsky.feed.post")
		}
	})
	b.Run("wildcard", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			wild.Match("app.bsky.graph.follow")
		}
	})
}

func BenchmarkPatternsMatch(b *testing.B) {
	ps, err := ParsePatterns([]string{
		"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.feed.repost",
		"app.bsky.graph.*", "xyz.statusphere.status", "sh.tangled.*",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ps.Match("sh.tangled.repo.issue")
	}
}
