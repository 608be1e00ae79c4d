package ingest

import (
	"math"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cistern-dev/cistern/firehose"
)

const src = "wss://relay.example"

// commitAt is a #commit message of sequence number seq made at t.
func commitAt(seq int64, t time.Time) *firehose.Message {
	return &firehose.Message{Seq: seq, Kind: "commit", DID: "did:plc:a",
		Commit: &comatproto.SyncSubscribeRepos_Commit{Seq: seq, Time: t.UTC().Format(time.RFC3339Nano)}}
}

// value returns the value of the series name{source=src, labels...}, and
// whether it exists.
func value(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"source": src}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return math.NaN()
}

// The lag and the cursor age are computed at scrape time: a source that
// stalls shows a growing lag, and the cursor's age is that of the message
// it was saved at.
func TestMetrics_LagAndCursorAgeAtScrapeTime(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0
	m := newMetrics(func() time.Time { return now })
	reg := m.Registry()

	if _, ok := value(t, reg, "cistern_firehose_lag_seconds"); ok {
		t.Fatal("a lag before any message was received")
	}
	for seq := int64(1); seq <= 10; seq++ {
		m.observeFrame(src, commitAt(seq, t0.Add(time.Duration(seq)*time.Second)))
	}
	m.setCursor(src, 4)

	tests := []struct {
		name      string
		at        time.Duration // since t0
		wantLag   float64
		wantAge   float64
		setCursor int64 // 0: none
	}{
		{"just after the newest message", 11 * time.Second, 1, 7, 0},
		{"the source stalls: both grow", time.Minute, 50, 56, 0},
		{"the cursor catches up", time.Minute, 50, 50, 10},
		{"each save dates the cursor again", time.Minute, 50, 53, 7},
	}
	for _, tt := range tests {
		now = t0.Add(tt.at)
		if tt.setCursor > 0 {
			m.setCursor(src, tt.setCursor)
		}
		if lag, _ := value(t, reg, "cistern_firehose_lag_seconds"); lag != tt.wantLag {
			t.Errorf("%s: lag %v, want %v", tt.name, lag, tt.wantLag)
		}
		if age, _ := value(t, reg, "cistern_firehose_cursor_age_seconds"); age != tt.wantAge {
			t.Errorf("%s: cursor age %v, want %v", tt.name, age, tt.wantAge)
		}
	}

	// A message from the future (a skewed clock) is not a negative lag.
	m.observeFrame(src, commitAt(11, now.Add(time.Hour)))
	if lag, _ := value(t, reg, "cistern_firehose_lag_seconds"); lag != 0 {
		t.Errorf("lag %v after a message from the future, want 0", lag)
	}
}

// The ring that dates cursors keeps the newest messages: once it wrapped,
// a cursor within it is dated exactly, and one older than all of it keeps
// the previous (older) date rather than a younger one.
func TestMetrics_CursorAgeAfterTheRingWraps(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0.Add(time.Hour)
	m := newMetrics(func() time.Time { return now })
	at := func(seq int64) time.Time { return t0.Add(time.Duration(seq) * time.Millisecond) }
	const n = recentSeqs*2 + 10
	m.observeFrame(src, commitAt(1, at(1)))
	m.setCursor(src, 1)
	for seq := int64(2); seq <= n; seq++ {
		m.observeFrame(src, commitAt(seq, at(seq)))
	}
	tests := []struct {
		cursor int64
		want   time.Time
	}{
		{n - recentSeqs + 1, at(n - recentSeqs + 1)}, // the oldest pair kept
		{n - 5, at(n - 5)},
		{n, at(n)},
		{5, at(n)}, // older than the ring: the previous date stays
	}
	for _, tt := range tests {
		m.setCursor(src, tt.cursor)
		want := now.Sub(tt.want).Seconds()
		if age, _ := value(t, m.Registry(), "cistern_firehose_cursor_age_seconds"); math.Abs(age-want) > 1e-9 {
			t.Errorf("cursor %d: age %v, want %v", tt.cursor, age, want)
		}
	}
}

// A source that was never connected says so, with zero counters.
func TestMetrics_SourceConnectionCounters(t *testing.T) {
	m := NewMetrics()
	c, err := firehose.New(firehose.Options{URL: src})
	if err != nil {
		t.Fatal(err)
	}
	m.sources.follow(src, c)
	for _, name := range []string{"cistern_firehose_connected", "cistern_firehose_connections_total", "cistern_firehose_reconnects_total"} {
		if v, ok := value(t, m.Registry(), name); !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", name, v, ok)
		}
	}
	if v, ok := value(t, m.Registry(), "cistern_firehose_frames_skipped_total", "reason", "malformed"); !ok || v != 0 {
		t.Errorf("malformed frames = %v (present %v), want 0", v, ok)
	}
	m.sources.unfollow(src, c)
	if _, ok := value(t, m.Registry(), "cistern_firehose_connected"); !ok {
		t.Error("a source that stopped is no longer reported")
	}
}

// BenchmarkMetrics_ObserveFrame is the cost per firehose message of the
// source metrics (the counter, the time parse and the ring).
func BenchmarkMetrics_ObserveFrame(b *testing.B) {
	m := NewMetrics()
	t0 := time.Now()
	msgs := make([]*firehose.Message, 1024)
	for i := range msgs {
		msgs[i] = commitAt(int64(i+1), t0)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		msg := msgs[i%len(msgs)]
		msg.Seq = int64(i + 1)
		m.observeFrame(src, msg)
	}
}
