// Package progress measures long work, such as a full-network crawl, the
// backfill after a filter widening or an index rebuild, for the status
// page, /status.json and the logs: how much is done of how much, at what
// rate, and when it should end.
//
// The code doing the work starts a Work on a Board, moves it with Add or
// Set (and SetTotal when the total becomes known or changes), and calls
// Finish when it ends. Readers take Snapshots. A Board keeps finished work
// for an hour (so the page shows what just ended), and at most 64 items.
//
//	w := board.Start("backlink rebuild", "records", total)
//	for ... { w.Add(int64(len(batch))) }
//	w.Finish(err)
package progress

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"
)

const (
	// keepFinished is how long finished work stays on the Board.
	keepFinished = time.Hour
	// maxItems bounds the Board; the oldest finished work goes first.
	maxItems = 64
	// rateSpan is the span over which the rate is measured: between one
	// and two of these, so that the ETA follows the recent pace.
	rateSpan = 30 * time.Second
)

// Board holds work in progress and work that ended within the last hour.
// It is safe for concurrent use; the zero Board is ready to use.
type Board struct {
	// Now, if set, replaces time.Now (tests).
	Now func() time.Time

	mu    sync.Mutex
	items []*Work
}

func (b *Board) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// Start begins a piece of work named name (a few words, such as "crawl
// of the full network"), counting in unit (plural, such as "repos"), of
// total units; a total of 0 means not known yet. Work of the same name that
// is still running is finished first.
func (b *Board) Start(name, unit string, total int64) *Work {
	now := b.now()
	w := &Work{b: b, name: name, unit: unit, total: total, started: now,
		cp0: checkpoint{at: now}, cp1: checkpoint{at: now}}
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.items[:0]
	for _, it := range b.items {
		it.mu.Lock()
		if it.name == name && it.finished.IsZero() {
			it.finished = now
		}
		old := !it.finished.IsZero() && now.Sub(it.finished) > keepFinished
		it.mu.Unlock()
		if !old {
			kept = append(kept, it)
		}
	}
	b.items = append(kept, w)
	for len(b.items) > maxItems {
		b.items = b.items[1:]
	}
	return w
}

// Snapshot returns every piece of work on the Board, in the order started.
func (b *Board) Snapshot() []Snapshot {
	now := b.now()
	b.mu.Lock()
	items := append([]*Work(nil), b.items...)
	b.mu.Unlock()
	out := make([]Snapshot, 0, len(items))
	for _, w := range items {
		s := w.Snapshot(now)
		if !s.Finished.IsZero() && now.Sub(s.Finished) > keepFinished {
			continue
		}
		out = append(out, s)
	}
	return out
}

// Log writes one info line for each piece of work running, every interval,
// until ctx ends; and one line when a piece of work finishes.
func (b *Board) Log(ctx context.Context, log *slog.Logger, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	reported := map[*Work]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		items := append([]*Work(nil), b.items...)
		b.mu.Unlock()
		now := b.now()
		live := map[*Work]bool{}
		for _, w := range items {
			live[w] = true
			s := w.Snapshot(now)
			switch {
			case s.Finished.IsZero():
				log.Info("progress: "+s.String(), s.attrs()...)
			case !reported[w]:
				reported[w] = true
				log.Info("progress: "+s.String(), s.attrs()...)
			}
		}
		for w := range reported {
			if !live[w] {
				delete(reported, w)
			}
		}
	}
}

// checkpoint is the count at a moment, for the rate.
type checkpoint struct {
	at   time.Time
	done int64
}

// Work is one piece of long work on a Board. Its methods are safe for
// concurrent use.
type Work struct {
	b          *Board
	name, unit string
	started    time.Time

	mu       sync.Mutex
	done     int64
	total    int64
	finished time.Time
	err      string
	cp0, cp1 checkpoint
}

// Add counts n more units done.
func (w *Work) Add(n int64) {
	w.mu.Lock()
	w.done += n
	w.checkpointLocked(w.b.now())
	w.mu.Unlock()
}

// Set says that done units are done in all (for work counted elsewhere).
func (w *Work) Set(done int64) {
	w.mu.Lock()
	w.done = done
	w.checkpointLocked(w.b.now())
	w.mu.Unlock()
}

// SetTotal sets the total, in units; 0 means not known.
func (w *Work) SetTotal(total int64) {
	w.mu.Lock()
	w.total = total
	w.mu.Unlock()
}

// Finish ends the work, with the error that stopped it or nil.
func (w *Work) Finish(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.finished.IsZero() {
		return
	}
	w.finished = w.b.now()
	if err != nil {
		w.err = err.Error()
	}
}

func (w *Work) checkpointLocked(now time.Time) {
	if now.Sub(w.cp1.at) >= rateSpan {
		w.cp0, w.cp1 = w.cp1, checkpoint{at: now, done: w.done}
	}
}

// Snapshot returns the work's state at now.
func (w *Work) Snapshot(now time.Time) Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Snapshot{Name: w.name, Unit: w.unit, Done: w.done, Total: w.total, Started: w.started,
		Finished: w.finished, Error: w.err, ETASeconds: -1}
	end := now
	if !w.finished.IsZero() {
		end = w.finished
	}
	if !w.finished.IsZero() {
		// The average over the whole work.
		if d := end.Sub(w.started).Seconds(); d > 0 {
			s.PerSecond = float64(w.done) / d
		}
		s.ETASeconds = 0
		return s
	}
	if d := end.Sub(w.cp0.at).Seconds(); d >= 1 {
		s.PerSecond = float64(w.done-w.cp0.done) / d
	}
	if left := w.total - w.done; w.total > 0 && left <= 0 {
		s.ETASeconds = 0
	} else if w.total > 0 && s.PerSecond > 0 {
		s.ETASeconds = math.Ceil(float64(left) / s.PerSecond)
	}
	return s
}

// Snapshot is a piece of work at one moment.
type Snapshot struct {
	// Name says what the work is; Unit what Done and Total count.
	Name string `json:"name"`
	Unit string `json:"unit"`
	// Done units of Total (0 when not known).
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// PerSecond is the recent rate (over the last 30 to 60 s) while the
	// work runs, the average over the whole work once it finished.
	PerSecond float64 `json:"perSecond"`
	// ETASeconds is the time left at the recent rate: -1 when it cannot be
	// told (no total, or no progress lately), 0 once done.
	ETASeconds float64 `json:"etaSeconds"`
	// Started and Finished (zero while running) bound the work; Error is
	// what stopped it, if anything did.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Error    string    `json:"error,omitempty"`
}

// Fraction returns Done/Total in [0, 1], or -1 when the total is not
// known.
func (s Snapshot) Fraction() float64 {
	if s.Total <= 0 {
		return -1
	}
	return min(max(float64(s.Done)/float64(s.Total), 0), 1)
}

// String says it in one line: "crawl: 1200 of 5000 repos (24%), 35
// repos/s, ETA 1m48s".
func (s Snapshot) String() string {
	var b []byte
	b = fmt.Appendf(b, "%s: %d", s.Name, s.Done)
	if s.Total > 0 {
		b = fmt.Appendf(b, " of %d %s (%.0f%%)", s.Total, s.Unit, 100*s.Fraction())
	} else {
		b = fmt.Appendf(b, " %s", s.Unit)
	}
	b = fmt.Appendf(b, ", %s %s/s", formatRate(s.PerSecond), s.Unit)
	switch {
	case s.Error != "":
		b = fmt.Appendf(b, ", stopped: %s", s.Error)
	case !s.Finished.IsZero():
		b = fmt.Appendf(b, ", done in %s", s.Finished.Sub(s.Started).Round(time.Second))
	case s.ETASeconds >= 0:
		b = fmt.Appendf(b, ", ETA %s", (time.Duration(s.ETASeconds) * time.Second).String())
	default:
		b = append(b, ", ETA unknown"...)
	}
	return string(b)
}

func (s Snapshot) attrs() []any {
	return []any{"work", s.Name, "done", s.Done, "total", s.Total, "unit", s.Unit,
		"per_second", math.Round(s.PerSecond*10) / 10, "eta_seconds", s.ETASeconds}
}

func formatRate(r float64) string {
	if r >= 10 || r == 0 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}
