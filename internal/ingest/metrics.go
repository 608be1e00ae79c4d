package ingest

import (
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cistern-dev/cistern/firehose"
	"github.com/cistern-dev/cistern/verify"
)

// Metrics are the counters of live ingestion: firehose messages, lag,
// cursors and connections by source; live commits applied, skipped and
// rejected by reason. They are served through Registry.
type Metrics struct {
	reg *prometheus.Registry

	frames   *prometheus.CounterVec
	sources  *sources
	cursor   *prometheus.GaugeVec
	appliedC prometheus.Counter
	ops      prometheus.Counter
	skippedC prometheus.Counter
	rejects  *prometheus.CounterVec

	heldDropped      prometheus.Counter
	notAuthoritative prometheus.Counter
}

// NewMetrics returns zeroed counters on a registry of their own.
func NewMetrics() *Metrics { return newMetrics(time.Now) }

func newMetrics(now func() time.Time) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cistern_firehose_messages_total",
			Help: "Firehose messages received, by source and kind."}, []string{"source", "kind"}),
		sources: newSources(now),
		cursor: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cistern_firehose_cursor",
			Help: "Saved firehose cursor (watermark), by source."}, []string{"source"}),
		appliedC: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_commits_applied_total",
			Help: "Live commits applied."}),
		ops: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_commit_ops_applied_total",
			Help: "Ops of live commits applied."}),
		skippedC: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_commits_skipped_total",
			Help: "Live commits skipped as stale (rev at or below the stored rev)."}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cistern_commits_rejected_total",
			Help: "Live commits rejected, by reason."}, []string{"reason"}),
		heldDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_held_dropped_total",
			Help: "Times a repo's held live commits were dropped past a cap, and the repo queued for a full backfill."}),
	}
	m.notAuthoritative = prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_commits_wrong_host_total",
		Help: "Live commits ignored because they came from a host that the repo's DID document does not name (Config.HostAuthority)."})
	m.reg.MustRegister(m.frames, m.sources, m.cursor, m.appliedC, m.ops, m.skippedC, m.rejects, m.heldDropped, m.notAuthoritative)
	for _, r := range verify.RejectReasons {
		m.rejects.WithLabelValues(string(r))
	}
	return m
}

func (m *Metrics) observeFrame(src string, msg *firehose.Message) {
	m.frames.WithLabelValues(src, msg.Kind).Inc()
	var ts string
	switch {
	case msg.Commit != nil:
		ts = msg.Commit.Time
	case msg.Identity != nil:
		ts = msg.Identity.Time
	case msg.Account != nil:
		ts = msg.Account.Time
	case msg.Sync != nil:
		ts = msg.Sync.Time
	}
	if t, err := syntax.ParseDatetimeLenient(ts); err == nil {
		m.sources.received(src, msg.Seq, t.Time())
	}
}

func (m *Metrics) setCursor(src string, c int64) {
	m.cursor.WithLabelValues(src).Set(float64(c))
	m.sources.saved(src, c)
}

func (m *Metrics) skipped()        { m.skippedC.Inc() }
func (m *Metrics) applied(ops int) { m.appliedC.Inc(); m.ops.Add(float64(ops)) }

func (m *Metrics) rejected(r verify.RejectReason) { m.rejects.WithLabelValues(string(r)).Inc() }

// Registry returns the registry the counters are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }
