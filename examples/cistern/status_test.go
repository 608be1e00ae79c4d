package main

import (
	"testing"

	"github.com/cistern-dev/cistern"
)

func TestBackfillProgress(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		repos                map[string]int64
		done, failing, total int64
	}{
		{"empty", map[string]int64{}, 0, 0, 0},
		{"all synced", map[string]int64{"synced": 5}, 5, 0, 5},
		{"working", map[string]int64{"synced": 2, "pending": 3, "backfilling": 1, "desynchronized": 1}, 2, 0, 7},
		// Failed repos wait for a retry: counted apart, so that the
		// progress lines end rather than repeat "ETA unknown" forever.
		{"failing", map[string]int64{"synced": 4, "error": 2}, 4, 2, 6},
		{"inactive count as done, deleted not at all", map[string]int64{"deactivated": 1, "takendown": 1, "deleted": 3}, 2, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done, failing, total := backfillProgress(&cistern.Stats{Repos: tc.repos})
			if done != tc.done || failing != tc.failing || total != tc.total {
				t.Fatalf("backfillProgress = %d, %d, %d; want %d, %d, %d", done, failing, total, tc.done, tc.failing, tc.total)
			}
		})
	}
}
