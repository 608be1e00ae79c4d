//go:build !race

package cistern_test

// The size of the big backfill tests (the 100 repos of 1,000
// records); race_test.go scales it down under the race detector.
const (
	bigRepos   = 100
	bigRecords = 1000
)
