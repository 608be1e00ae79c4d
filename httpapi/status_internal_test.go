package httpapi

import (
	"fmt"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/internal/progress"
)

func TestWorstHosts(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var hosts []backfill.HostStats
	for i := range 5000 {
		hosts = append(hosts, backfill.HostStats{Host: fmt.Sprintf("pds%04d.example", i), BytesPerSecond: float64(i % 7)})
	}
	hosts[4000].Failing, hosts[4000].LastError = 3, &backfill.Failure{Kind: "http", Message: "getRepo: 503"}
	hosts[17].Failing, hosts[17].LastError = 9, &backfill.Failure{Kind: "timeout", Message: "no answer"}
	hosts[2500].RateLimitedUntil = now.Add(time.Minute)
	hosts[2501].RateLimitedUntil = now.Add(-time.Minute) // over
	hosts[99].Queued = 4
	hosts[98].InFlight = 2

	for _, tc := range []struct {
		name    string
		n       int
		omitted int
		first   []string
		reasons []string
	}{
		{"worst first", 25, 4975,
			[]string{"pds0017.example", "pds4000.example", "pds2500.example", "pds0099.example", "pds0098.example"},
			[]string{"timeout: no answer", "http: getRepo: 503", "rate limited until 2026-01-01T00:01:00Z", "", ""}},
		{"all", 5000, 0, []string{"pds0017.example"}, []string{"timeout: no answer"}},
		{"one", 1, 4999, []string{"pds0017.example"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, omitted := worstHosts(append([]backfill.HostStats(nil), hosts...), tc.n, now)
			if len(got) != min(tc.n, len(hosts)) || omitted != tc.omitted {
				t.Fatalf("%d hosts, %d omitted; want %d and %d", len(got), omitted, tc.n, tc.omitted)
			}
			for i, h := range tc.first {
				if got[i].Host != h {
					t.Fatalf("host %d is %s, want %s", i, got[i].Host, h)
				}
			}
			for i, r := range tc.reasons {
				if got[i].Reason != r {
					t.Fatalf("reason %d is %q, want %q", i, got[i].Reason, r)
				}
			}
		})
	}
}

func TestDiskGrowth(t *testing.T) {
	at := time.Unix(10_000, 0)
	for _, tc := range []struct {
		name string
		hist []Sample
		now  int64
		want float64
	}{
		{"no history", nil, 100, 0},
		{"under a minute", []Sample{{Time: 9_970, DiskBytes: 100}}, 200, 0},
		{"half an hour", []Sample{{Time: 10_000 - 1800, DiskBytes: 1000}}, 3000, 4000},
		{"shrunk", []Sample{{Time: 10_000 - 3600, DiskBytes: 3000}}, 1000, -2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := diskGrowth(tc.hist, tc.now, at); got != tc.want {
				t.Fatalf("diskGrowth = %v, want %v", got, tc.want)
			}
		})
	}
}

// The backfill is long work from the sample where repos wait to the one
// where none does: a filter widening that queues every repo again shows as
// a backfill with its progress and ETA.
func TestStatus_BackfillAsLongWork(t *testing.T) {
	s := &Status{opts: StatusOptions{}.withDefaults(), works: map[string]*progress.Work{}}
	s.ring = make([]Sample, 0, 4)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.board.Now = func() time.Time { return at }
	step := func(repos map[string]int64, inFlight int) {
		t.Helper()
		at = at.Add(10 * time.Second)
		st := &cistern.Stats{Repos: repos}
		st.Backfill.InFlight = inFlight
		s.add(st, 0, at)
	}
	step(map[string]int64{"synced": 100}, 0)
	if len(s.works) != 0 {
		t.Fatal("work started with nothing to do")
	}
	// The collections widened: every repo is queued again.
	step(map[string]int64{"pending": 100}, 0)
	for done := int64(10); done <= 60; done += 10 {
		step(map[string]int64{"synced": done, "pending": 100 - done}, 4)
	}
	w := s.works["backfill"].Snapshot(at)
	if w.Name != "backfill" || w.Done != 60 || w.Total != 100 || w.PerSecond != 1 || w.ETASeconds != 40 {
		t.Fatalf("backfill work %+v, want 60 of 100 at 1 repo/s, ETA 40 s", w)
	}
	step(map[string]int64{"synced": 100}, 0)
	if len(s.works) != 0 {
		t.Fatal("work still running once every repo is synced")
	}
	if all := s.board.Snapshot(); len(all) != 1 || all[0].Finished.IsZero() || all[0].Done != 100 {
		t.Fatalf("board %+v, want the finished backfill", all)
	}
	// The ring keeps the last 4 samples, oldest first.
	h := s.history()
	if len(h) != 4 || h[0].Time >= h[3].Time || h[3].BackfillDone != 100 {
		t.Fatalf("history %+v", h)
	}
}

// BenchmarkWorstHosts5000 is the cost of ordering 5,000 hosts for one
// /status.json.
func BenchmarkWorstHosts5000(b *testing.B) {
	now := time.Now()
	hosts := make([]backfill.HostStats, 5000)
	for i := range hosts {
		hosts[i] = backfill.HostStats{Host: fmt.Sprintf("pds%04d.example", i), Failing: i % 3, Queued: i % 5}
	}
	work := make([]backfill.HostStats, len(hosts))
	for b.Loop() {
		copy(work, hosts)
		worstHosts(work, DefaultStatusHosts, now)
	}
}

// The backlink index's build shows as long work while its state says
// building.
func TestStatus_BacklinkBuildAsLongWork(t *testing.T) {
	s := &Status{opts: StatusOptions{}.withDefaults(), works: map[string]*progress.Work{}}
	s.ring = make([]Sample, 0, 4)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.board.Now = func() time.Time { return at }
	for done := int64(0); done <= 40_000; done += 5_000 {
		at = at.Add(10 * time.Second)
		st := &cistern.Stats{Repos: map[string]int64{"synced": 3}}
		st.Backlinks.State, st.Backlinks.Done, st.Backlinks.Total = "building", done, 100_000
		s.add(st, 0, at)
	}
	w := s.works["backlink index build"].Snapshot(at)
	if w.Unit != "records" || w.Done != 40_000 || w.PerSecond != 500 || w.ETASeconds != 120 {
		t.Fatalf("build %+v, want 40000 of 100000 records at 500/s, ETA 120 s", w)
	}
	at = at.Add(10 * time.Second)
	st := &cistern.Stats{Repos: map[string]int64{"synced": 3}}
	st.Backlinks.State, st.Backlinks.Done = "ready", 100_000
	s.add(st, 0, at)
	if len(s.works) != 0 {
		t.Fatalf("works %v after the build", s.works)
	}
}
