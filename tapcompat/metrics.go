package tapcompat

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the outbox's counters at scrape time, labelled with
// the consumer's name.
type collector struct {
	s                                           *Service
	lag, pending, inFlight, acked               *prometheus.Desc
	delivered, redelivered, ackedTotal, skipped *prometheus.Desc
}

// Collector returns the Prometheus metrics of delivery: lag (events of the
// log not yet acknowledged), pending and in-flight events, the stored
// position, and counters of deliveries, redeliveries, acks and skipped
// events, each labelled consumer="tap.channel" or "tap.webhook".
func (s *Service) Collector() prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"consumer"}, nil)
	}
	return &collector{
		s:           s,
		lag:         d("cistern_tap_lag_events", "Events of the log the tap delivery target has not acknowledged."),
		pending:     d("cistern_tap_pending_events", "Events read for tap delivery and not acknowledged."),
		inFlight:    d("cistern_tap_in_flight_events", "Events sent to a tap client or webhook and not acknowledged."),
		acked:       d("cistern_tap_acked_position", "Stored position of the tap consumer: every event up to it is acknowledged."),
		delivered:   d("cistern_tap_delivered_total", "Events sent to tap clients or the webhook, redeliveries included."),
		redelivered: d("cistern_tap_redelivered_total", "Events sent again after a timeout, a disconnect or a failed webhook post."),
		ackedTotal:  d("cistern_tap_acked_total", "Acknowledgements of delivered events."),
		skipped:     d("cistern_tap_skipped_total", "Events with no tap form (account statuses tap does not know)."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.pending, c.inFlight, c.acked, c.delivered, c.redelivered, c.ackedTotal, c.skipped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.outbox.Stats()
	name := st.Name
	g := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
	}
	n := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if lag, err := c.s.Lag(ctx); err == nil {
		g(c.lag, float64(lag))
	} else {
		ch <- prometheus.NewInvalidMetric(c.lag, err)
	}
	g(c.pending, float64(st.Pending))
	g(c.inFlight, float64(st.InFlight))
	g(c.acked, float64(st.Acked))
	n(c.delivered, st.Delivered)
	n(c.redelivered, st.Redelivered)
	n(c.ackedTotal, st.AckedTotal)
	n(c.skipped, st.Skipped)
}
