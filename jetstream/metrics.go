package jetstream

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Handler's Prometheus counters.
type metrics struct {
	subscribers    prometheus.Gauge
	outdated       prometheus.Counter
	invalidUpdates prometheus.Counter
	slow           prometheus.Counter
	events         prometheus.Counter
	bytes          prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cistern_jetstream_subscribers",
			Help: "Open Jetstream /subscribe connections."}),
		outdated: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_jetstream_outdated_cursors_total",
			Help: "Jetstream cursors older than the retained log, continued from the oldest retained event (at connect, or when retention overtook a connection)."}),
		invalidUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_jetstream_invalid_options_updates_total",
			Help: "Jetstream connections closed for an invalid options_update."}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_jetstream_slow_disconnects_total",
			Help: "Jetstream connections dropped because a write timed out (the client stopped reading)."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_jetstream_events_sent_total",
			Help: "Events sent to Jetstream clients."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "cistern_jetstream_sent_bytes_total",
			Help: "Bytes of event messages sent to Jetstream clients, after compression."}),
	}
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.subscribers, m.outdated, m.invalidUpdates, m.slow, m.events, m.bytes}
}

// Describe implements prometheus.Collector.
func (h *Handler) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range h.m.all() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (h *Handler) Collect(ch chan<- prometheus.Metric) {
	for _, c := range h.m.all() {
		c.Collect(ch)
	}
}

var _ prometheus.Collector = (*Handler)(nil)
