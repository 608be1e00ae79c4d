package main

import (
	"context"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cistern-dev/cistern"
)

// maxSamples is how many throughput samples the status page charts.
const maxSamples = 120

// sample is one throughput measurement.
type sample struct {
	At           time.Time
	EventsPerSec float64
}

// status samples the indexer's progress: it prints progress lines while
// repos are backfilling and serves the status page.
type status struct {
	ix      *cistern.Indexer
	started time.Time

	mu      sync.Mutex
	samples []sample
	eta     string
	recRate float64
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
		var evRate, recRate, repoRate float64
		doneRepos, failing, total := backfillProgress(st)
		if last != nil && dt > 0 {
			evRate = float64(st.NewestEvent-last.NewestEvent) / dt
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
		s.mu.Lock()
		s.samples = append(s.samples, sample{At: now, EventsPerSec: evRate})
		if len(s.samples) > maxSamples {
			s.samples = slices.Delete(s.samples, 0, len(s.samples)-maxSamples)
		}
		s.eta, s.recRate = eta, recRate
		s.mu.Unlock()
		last, lastAt = st, now
	}
}

// chart draws the samples as an inline SVG polyline.
func chart(samples []sample, width, height float64) template.HTML {
	if len(samples) < 2 {
		return template.HTML(`<p class="muted">collecting samples…</p>`)
	}
	peak := 1.0
	for _, s := range samples {
		peak = max(peak, s.EventsPerSec)
	}
	var pts strings.Builder
	step := width / float64(maxSamples-1)
	x0 := width - step*float64(len(samples)-1)
	for i, s := range samples {
		fmt.Fprintf(&pts, "%.1f,%.1f ", x0+step*float64(i), height-2-(height-4)*s.EventsPerSec/peak)
	}
	return template.HTML(fmt.Sprintf(`<svg width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" aria-label="events per second">`+
		`<rect width="100%%" height="100%%" fill="#f6f8fa"/>`+
		`<polyline fill="none" stroke="#0969da" stroke-width="2" points="%s"/>`+
		`<text x="4" y="14" font-size="12" fill="#57606a">peak %.0f events/s</text></svg>`,
		width, height, width, height, strings.TrimSpace(pts.String()), peak))
}

var page = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>cistern</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:52em;color:#1f2328;padding:0 1em}
h1{font-size:1.4em}table{border-collapse:collapse}td,th{padding:.2em 1em .2em 0;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#57606a}code{background:#f6f8fa;padding:.1em .3em}
</style></head><body>
<h1>cistern</h1>
<p>Tracking {{.Tracking}}. Up {{.Uptime}}.</p>
<h2>Backfill</h2>
<p>{{.Done}} of {{.Total}} repos done{{if .ETA}}, {{printf "%.0f" .RecRate}} records/s, ETA {{.ETA}}{{end}}.
{{.S.Queued}} queued, {{.S.Backfill.InFlight}} in flight, {{.S.Backfill.Completed}} completed, {{.S.Backfill.Failed}} failed.</p>
<h2>Throughput</h2>
{{.Chart}}
<h2>Store</h2>
<table>
<tr><th>records</th><td class="n">{{.S.Records}}</td></tr>
<tr><th>events retained</th><td class="n">{{.S.Events}}</td></tr>
<tr><th>newest event</th><td class="n">{{.S.NewestEvent}}</td></tr>
<tr><th>size on disk</th><td class="n">{{.Disk}}</td></tr>
{{range .States}}<tr><th>repos {{.Name}}</th><td class="n">{{.N}}</td></tr>{{end}}
</table>
<p class="muted">API: <code>/xrpc/com.atproto.repo.listRecords</code>, <code>/stream</code>, <code>/stats</code>, <code>/metrics</code>. This page refreshes every 5 s.</p>
</body></html>
`))

// ServeHTTP renders the status page.
func (s *status) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st, err := s.ix.Stats(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	done, _, total := backfillProgress(st)
	type stateN struct {
		Name string
		N    int64
	}
	var states []stateN
	for name, n := range st.Repos {
		states = append(states, stateN{name, n})
	}
	slices.SortFunc(states, func(a, b stateN) int { return strings.Compare(a.Name, b.Name) })
	s.mu.Lock()
	data := map[string]any{
		"Tracking": describe(s.ix.Filter().Spec()),
		"Uptime":   time.Since(s.started).Round(time.Second).String(),
		"S":        st, "Done": done, "Total": total, "ETA": s.eta, "RecRate": s.recRate,
		"Chart":  chart(s.samples, 600, 120),
		"Disk":   fmt.Sprintf("%.1f MiB", float64(st.DiskBytes)/(1<<20)),
		"States": states,
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := page.Execute(w, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
