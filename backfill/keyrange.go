package backfill

import (
	"slices"
	"strings"

	"github.com/cistern-dev/cistern/filter"
)

// keyRange is the MST keys k with lo <= k < hi; an empty hi is unbounded.
// Repo keys are "collection/rkey", so the keys of one collection, or of every
// collection under an NSID prefix, form one such range.
type keyRange struct {
	lo, hi string
}

// contains reports whether key is in the range.
func (r keyRange) contains(key string) bool {
	return key >= r.lo && (r.hi == "" || key < r.hi)
}

// keyRanges is a sorted list of disjoint ranges.
type keyRanges []keyRange

// everything is the range of all keys.
var everything = keyRanges{{}}

// rangesOf returns the key ranges of the collections that the patterns
// select: "a.b.c" is [a.b.c/, a.b.c0) ('0' follows '/'), "a.b.*" is
// [a.b., a.b/) ('/' follows '.'), and "*" or no pattern at all is
// everything. Invalid patterns are skipped (filters are validated first).
func rangesOf(patterns []string) keyRanges {
	if len(patterns) == 0 {
		return everything
	}
	var rs keyRanges
	for _, s := range patterns {
		p, err := filter.ParsePattern(s)
		if err != nil {
			continue
		}
		switch {
		case s == "*":
			return everything
		case p.IsWildcard():
			prefix := strings.TrimSuffix(s, "*") // ends in "."
			rs = append(rs, keyRange{lo: prefix, hi: prefix[:len(prefix)-1] + "/"})
		default:
			rs = append(rs, keyRange{lo: s + "/", hi: s + "0"})
		}
	}
	return rs.normalize()
}

// normalize sorts the ranges and merges those that overlap or touch.
func (rs keyRanges) normalize() keyRanges {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b keyRange) int { return strings.Compare(a.lo, b.lo) })
	var out keyRanges
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].hi == "" || r.lo <= out[n-1].hi) {
			if out[n-1].hi != "" && (r.hi == "" || r.hi > out[n-1].hi) {
				out[n-1].hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// union returns the ranges of both lists.
func (rs keyRanges) union(other keyRanges) keyRanges {
	return append(slices.Clone(rs), other...).normalize()
}

// isEverything reports whether the ranges cover every key.
func (rs keyRanges) isEverything() bool {
	return len(rs) == 1 && rs[0].lo == "" && rs[0].hi == ""
}

// contains reports whether key is in one of the ranges.
func (rs keyRanges) contains(key string) bool {
	i, _ := slices.BinarySearchFunc(rs, key, func(r keyRange, k string) int {
		if r.hi != "" && r.hi <= k {
			return -1
		}
		if r.lo > k {
			return 1
		}
		return 0
	})
	return i < len(rs) && rs[i].contains(key)
}

// mayOverlap reports whether a subtree holding only keys strictly between
// after and before (after "" and before "" meaning unbounded, as the empty
// key is not a valid key) may hold a key of the ranges. It errs on the side
// of yes.
func (rs keyRanges) mayOverlap(after, before string) bool {
	for _, r := range rs {
		if before != "" && r.lo >= before {
			return false // this and every later range start past the subtree
		}
		if r.hi == "" || after == "" || after < r.hi {
			return true
		}
	}
	return false
}
