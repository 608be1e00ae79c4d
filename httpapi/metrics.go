package httpapi

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// MaxConsumerSeries bounds the durable consumers reported one by one in
// /metrics (cistern_consumer_*{consumer}): those furthest behind come
// first; cistern_consumers counts them all.
const MaxConsumerSeries = 100

// collector exports Indexer.Stats as Prometheus metrics at scrape time: the
// backfill queue and work, the event log, subscribers, durable consumers,
// handle checks and store size. The Indexer's own counters (firehose,
// commits) come from Indexer.Gatherer.
//
// No metric has a PDS host label: a full-network index talks to tens of
// thousands of hosts, and a counter cannot move between a "top N" set and
// an "other" bucket without breaking rate(). Per-host figures are in the
// status JSON; /metrics has totals and counts of hosts.
type collector struct {
	ix          *cistern.Indexer
	subscribers *atomic.Int64

	repos, records, events, eventsWritten, newest, oldest, diskBytes, blockBytes *prometheus.Desc
	queue, inFlight, completed, failed, rateLimited, bytes, budget               *prometheus.Desc
	recordsWritten, hostsLimited, subs, subscriptions                            *prometheus.Desc
	heldCommits, heldBytes                                                       *prometheus.Desc
	requests, sparse, sparseFallbacks                                            *prometheus.Desc
	handlesQueued, handlesRunning, handlesChecked, handlesChanged                *prometheus.Desc
	handlesFailed, handlesDropped                                                *prometheus.Desc
	consumers, consumerLag, consumerAcked                                        *prometheus.Desc
}

func newCollector(ix *cistern.Indexer, subscribers *atomic.Int64) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		ix: ix, subscribers: subscribers,
		repos:           d("cistern_repos", "Tracked repos, by state (every state, zeros included).", "state"),
		records:         d("cistern_records", "Records stored."),
		events:          d("cistern_events", "Events retained in the log."),
		eventsWritten:   d("cistern_events_written_total", "Events appended to the log since the store was created (the newest event's id)."),
		newest:          d("cistern_event_newest_id", "Id of the newest event."),
		oldest:          d("cistern_event_oldest_id", "Id of the oldest retained event."),
		diskBytes:       d("cistern_store_size_bytes", "Size of the store on disk."),
		blockBytes:      d("cistern_store_block_bytes", "Bytes of record values held in the block store."),
		queue:           d("cistern_backfill_queued_repos", "Repos waiting in the backfill queue (failed ones waiting for a retry included)."),
		inFlight:        d("cistern_backfill_in_flight_repos", "Repos being backfilled now."),
		completed:       d("cistern_backfill_completed_total", "Backfills that reached a final state."),
		failed:          d("cistern_backfill_failed_total", "Backfills that failed and were queued for a retry."),
		rateLimited:     d("cistern_backfill_rate_limited_total", "Backfills deferred because their host was rate limited."),
		bytes:           d("cistern_backfill_bytes_total", "Response bytes fetched by backfills (getRepo and getBlocks CARs, sparse JSON answers)."),
		budget:          d("cistern_backfill_budget_used_bytes", "Bytes of the backfill byte budget held now by CARs being fetched."),
		recordsWritten:  d("cistern_backfill_records_total", "Record changes written by backfills."),
		hostsLimited:    d("cistern_backfill_rate_limited_hosts", "PDS hosts paused after a 429 now."),
		requests:        d("cistern_backfill_requests_total", "HTTP requests made to PDS hosts by backfills."),
		sparse:          d("cistern_backfill_sparse_total", "Backfills completed with a sparse (getBlocks) walk."),
		sparseFallbacks: d("cistern_backfill_sparse_fallbacks_total", "Backfills that began a sparse walk and fetched the repo whole instead."),
		subs:            d("cistern_stream_subscribers", "Open /stream connections."),
		subscriptions:   d("cistern_stream_subscriptions", "Event subscriptions running: the library's and /stream's."),
		heldCommits:     d("cistern_held_commits", "Live commits held for repos not synced yet, applied after their backfill."),
		heldBytes:       d("cistern_held_bytes", "Bytes the held live commits take in the store."),
		handlesQueued:   d("cistern_handle_checks_queued", "Repos waiting for a handle check."),
		handlesRunning:  d("cistern_handle_checks_running", "Handle checks running now."),
		handlesChecked:  d("cistern_handle_checks_total", "Handle checks that answered (and whose verdict was written)."),
		handlesChanged:  d("cistern_handle_checks_changed_total", "Handle checks whose verdict changed a stored handle."),
		handlesFailed:   d("cistern_handle_checks_failed_total", "Handle checks that failed (the DID did not resolve)."),
		handlesDropped:  d("cistern_handle_checks_dropped_total", "Handle check requests dropped because the queue was full."),
		consumers:       d("cistern_consumers", "Durable consumers with a stored position."),
		consumerLag: d("cistern_consumer_lag_events",
			"Events of the log after the durable consumer's last acknowledged one (the "+strconv.Itoa(MaxConsumerSeries)+" furthest behind).", "consumer"),
		consumerAcked: d("cistern_consumer_last_ack_timestamp_seconds",
			"Unix time at which the durable consumer's acknowledged position last moved (the "+strconv.Itoa(MaxConsumerSeries)+" furthest behind).", "consumer"),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.repos, c.records, c.events, c.eventsWritten, c.newest, c.oldest,
		c.diskBytes, c.blockBytes, c.queue, c.inFlight, c.completed, c.failed, c.rateLimited, c.bytes, c.budget,
		c.recordsWritten, c.hostsLimited, c.subs, c.subscriptions, c.requests, c.sparse, c.sparseFallbacks,
		c.heldCommits, c.heldBytes, c.handlesQueued, c.handlesRunning, c.handlesChecked, c.handlesChanged,
		c.handlesFailed, c.handlesDropped, c.consumers, c.consumerLag, c.consumerAcked} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.ix.Stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.records, err)
		return
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	n := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	for _, state := range store.RepoStates {
		g(c.repos, float64(st.Repos[state.String()]), state.String())
	}
	g(c.records, float64(st.Records))
	g(c.events, float64(st.Events))
	n(c.eventsWritten, int64(st.NewestEvent))
	g(c.newest, float64(st.NewestEvent))
	g(c.oldest, float64(st.OldestEvent))
	g(c.diskBytes, float64(st.DiskBytes))
	g(c.blockBytes, float64(st.BlockBytes))
	bf := st.Backfill
	g(c.queue, float64(st.Queued))
	g(c.inFlight, float64(bf.InFlight))
	n(c.completed, bf.Completed)
	n(c.failed, bf.Failed)
	n(c.rateLimited, bf.RateLimited)
	n(c.bytes, bf.BytesFetched)
	g(c.budget, float64(bf.BudgetInUse))
	n(c.requests, bf.Requests)
	n(c.sparse, bf.Sparse)
	n(c.sparseFallbacks, bf.SparseFallbacks)
	n(c.recordsWritten, bf.RecordsWritten)
	g(c.hostsLimited, float64(bf.HostsRateLimited))
	g(c.subs, float64(c.subscribers.Load()))
	g(c.subscriptions, float64(st.Subscriptions))
	g(c.heldCommits, float64(st.HeldCommits))
	g(c.heldBytes, float64(st.HeldBytes))
	hc := st.HandleChecks
	g(c.handlesQueued, float64(hc.Queued))
	g(c.handlesRunning, float64(hc.Running))
	n(c.handlesChecked, hc.Checked)
	n(c.handlesChanged, hc.Changed)
	n(c.handlesFailed, hc.Failed)
	n(c.handlesDropped, hc.Dropped)
	c.collectConsumers(ctx, ch, st.NewestEvent)
}

// collectConsumers reports each durable consumer's lag behind newest, the
// MaxConsumerSeries furthest behind, and how many there are.
func (c *collector) collectConsumers(ctx context.Context, ch chan<- prometheus.Metric, newest uint64) {
	cs, err := c.ix.Consumers(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.consumers, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.consumers, prometheus.GaugeValue, float64(len(cs)))
	lag := func(acked uint64) uint64 {
		if acked >= newest {
			return 0
		}
		return newest - acked
	}
	slices.SortFunc(cs, func(a, b stream.Consumer) int {
		return cmp.Or(cmp.Compare(lag(b.Acked), lag(a.Acked)), cmp.Compare(a.Name, b.Name))
	})
	for _, k := range cs[:min(len(cs), MaxConsumerSeries)] {
		ch <- prometheus.MustNewConstMetric(c.consumerLag, prometheus.GaugeValue, float64(lag(k.Acked)), k.Name)
		if !k.Updated.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.consumerAcked, prometheus.GaugeValue,
				float64(k.Updated.UnixNano())/1e9, k.Name)
		}
	}
}
