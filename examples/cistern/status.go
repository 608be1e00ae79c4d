package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cistern-dev/cistern"
)

// status samples the indexer's progress and prints progress lines while
// repos are backfilling. (The status page is httpapi's, at / and /status.)
type status struct {
	ix      *cistern.Indexer
	started time.Time
}

func newStatus(ix *cistern.Indexer, started time.Time) *status {
	return &status{ix: ix, started: started}
}

// backfillProgress counts the repos done, those whose backfill failed and
// waits for a retry (state error), and all of them. The rest are to do.
func backfillProgress(st *cistern.Stats) (done, failing, total int64) {
	for state, n := range st.Repos {
		switch state {
		case "pending", "backfilling", "desynchronized":
		case "error":
			failing += n
		case "deleted":
			continue
		default:
			done += n
		}
		total += n
	}
	return done, failing, total
}

// report samples every interval until ctx ends, printing a progress line
// while there is backfill work and one when it is all done.
func (s *status) report(ctx context.Context, w io.Writer, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last *cistern.Stats
	lastAt := time.Now()
	wasBusy, first := false, true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := s.ix.Stats(ctx)
		if err != nil {
			continue
		}
		now := time.Now()
		dt := now.Sub(lastAt).Seconds()
		var recRate, repoRate float64
		doneRepos, failing, total := backfillProgress(st)
		if last != nil && dt > 0 {
			recRate = float64(st.Backfill.RecordsWritten-last.Backfill.RecordsWritten) / dt
			lastDone, _, _ := backfillProgress(last)
			repoRate = float64(doneRepos-lastDone) / dt
		}
		// Repos whose backfill failed wait (with a growing backoff) for a
		// retry: they are reported, but do not keep the backfill "busy".
		busy := doneRepos+failing < total || st.Backfill.InFlight > 0
		failNote := ""
		if failing > 0 {
			failNote = fmt.Sprintf(", %d failing (retried later; see GET /repos?state=error)", failing)
		}
		eta := ""
		if busy {
			eta = "unknown"
			if repoRate > 0 {
				eta = (time.Duration(float64(total-doneRepos-failing)/repoRate) * time.Second).Round(time.Second).String()
			}
			fmt.Fprintf(w, "backfill: %d of %d repos done%s, %.0f records/s, ETA %s\n", doneRepos, total, failNote, recRate, eta)
		} else if wasBusy || (first && total > 0) {
			fmt.Fprintf(w, "backfill: %d of %d repos done%s; %d records stored, following the firehose\n", doneRepos, total, failNote, st.Records)
		}
		wasBusy, first = busy, false
		last, lastAt = st, now
	}
}
