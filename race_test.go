//go:build race

package cistern_test

// Under the race detector the big backfill tests run on fewer, smaller
// repos; each logs the size it ran.
const (
	bigRepos   = 40
	bigRecords = 400
)
