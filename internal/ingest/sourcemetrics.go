package ingest

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cistern-dev/cistern/firehose"
)

// recentSeqs is how many (sequence number, time) pairs a source keeps to
// date its saved cursor. The cursor is at most the messages in flight
// behind the newest one received (FirehoseWorkers × (firehoseQueue+1),
// 640 by default), so 4,096 pairs (64 KiB a source) cover it with room.
const recentSeqs = 4096

// sources exports, at scrape time, what each firehose source's follow
// knows: how far behind the source it is, how old its saved cursor is,
// whether it is connected and how often it reconnected. Ages are computed
// at scrape time, so that a stalled source shows a growing lag rather than
// the last value it set.
type sources struct {
	now func() time.Time

	lag, cursorAge, connected, connections, reconnects, skipped *prometheus.Desc

	mu sync.Mutex
	m  map[string]*source // by source URL; one entry per configured source
}

// source is the state of one firehose source.
type source struct {
	last     time.Time // event time of the newest message received
	cursorAt time.Time // event time of the message at the saved cursor
	recent   []seqTime // ring of the newest messages' times, seq increasing
	next     int       // where the ring's next pair goes once it is full

	client *firehose.Client // of the follow running now, or nil
	ended  firehose.Stats   // sums of the counters of clients that ended
}

type seqTime struct {
	seq int64
	at  time.Time
}

func newSources(now func() time.Time) *sources {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{"source"}, labels...), nil)
	}
	return &sources{
		now: now,
		m:   make(map[string]*source),
		lag: d("cistern_firehose_lag_seconds",
			"Seconds between now and the event time of the newest message received from the source: how far behind it ingestion is. It grows while the source is stalled or silent."),
		cursorAge: d("cistern_firehose_cursor_age_seconds",
			"Seconds between now and the event time of the message at the saved cursor: what a restart would replay."),
		connected: d("cistern_firehose_connected",
			"1 while a connection to the source is open, 0 otherwise."),
		connections: d("cistern_firehose_connections_total",
			"Connections opened to the source (handshakes that succeeded)."),
		reconnects: d("cistern_firehose_reconnects_total",
			"Times the connection to the source ended or could not be opened and a reconnect was scheduled."),
		skipped: d("cistern_firehose_frames_skipped_total",
			"Frames of the source that were not handled, by reason: duplicate (sequence number already seen), unknown_kind, malformed, error_frame.", "reason"),
	}
}

func (s *sources) get(src string) *source {
	e := s.m[src]
	if e == nil {
		e = &source{}
		s.m[src] = e
	}
	return e
}

// follow records that client now follows src; unfollow folds the client's
// counters into the source's totals once it stopped.
func (s *sources) follow(src string, c *firehose.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(src).client = c
}

func (s *sources) unfollow(src string, c *firehose.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(src)
	if e.client != c {
		return
	}
	e.ended = addStats(e.ended, c.Stats())
	e.client = nil
}

func addStats(a, b firehose.Stats) firehose.Stats {
	a.Connections += b.Connections
	a.Reconnects += b.Reconnects
	a.Duplicates += b.Duplicates
	a.Unknown += b.Unknown
	a.Malformed += b.Malformed
	a.ErrorFrames += b.ErrorFrames
	return a
}

// received notes the event time of message seq of src (seq 0 for a
// message without a number, such as #info).
func (s *sources) received(src string, seq int64, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(src)
	if at.After(e.last) {
		e.last = at
	}
	if seq <= 0 {
		return
	}
	p := seqTime{seq, at}
	if len(e.recent) < recentSeqs {
		e.recent = append(e.recent, p)
		return
	}
	e.recent[e.next] = p
	e.next = (e.next + 1) % recentSeqs
}

// saved notes that src's cursor was saved at seq. Its event time is that
// of the newest message received at or below seq; when the ring no longer
// holds one, the previous cursor time stays, which overstates the age
// rather than understating it.
func (s *sources) saved(src string, seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(src)
	// The ring is seq-increasing from e.next (oldest) around to e.next-1.
	n := len(e.recent)
	at := func(i int) seqTime { return e.recent[(e.next+i)%n] }
	i := sort.Search(n, func(i int) bool { return at(i).seq > seq })
	if i > 0 {
		e.cursorAt = at(i - 1).at
	}
}

// Describe implements prometheus.Collector.
func (s *sources) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.lag, s.cursorAge, s.connected, s.connections, s.reconnects, s.skipped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *sources) Collect(ch chan<- prometheus.Metric) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for src, e := range s.m {
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{src}, labels...)...)
		}
		counter := func(d *prometheus.Desc, v int64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{src}, labels...)...)
		}
		if !e.last.IsZero() {
			gauge(s.lag, max(now.Sub(e.last).Seconds(), 0))
		}
		if !e.cursorAt.IsZero() {
			gauge(s.cursorAge, max(now.Sub(e.cursorAt).Seconds(), 0))
		}
		st := e.ended
		connected := 0.0
		if e.client != nil {
			cur := e.client.Stats()
			st = addStats(st, cur)
			if cur.Connected {
				connected = 1
			}
		}
		gauge(s.connected, connected)
		counter(s.connections, st.Connections)
		counter(s.reconnects, st.Reconnects)
		counter(s.skipped, st.Duplicates, "duplicate")
		counter(s.skipped, st.Unknown, "unknown_kind")
		counter(s.skipped, st.Malformed, "malformed")
		counter(s.skipped, st.ErrorFrames, "error_frame")
	}
}
