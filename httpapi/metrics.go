package httpapi

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cistern-dev/cistern"
)

// collector exports Indexer.Stats as Prometheus metrics at scrape time: the
// backfill queue and work, the event log, subscribers and store size. The
// Indexer's own counters (firehose, commits) come from Indexer.Gatherer.
type collector struct {
	ix          *cistern.Indexer
	subscribers *atomic.Int64

	mu       sync.Mutex
	lastAt   time.Time
	lastRecs int64
	lastRate float64

	repos, records, events, newest, oldest, diskBytes, blockBytes  *prometheus.Desc
	queue, inFlight, completed, failed, rateLimited, bytes         *prometheus.Desc
	recordsWritten, recordsRate, hostsLimited, subs, subscriptions *prometheus.Desc
	heldCommits, heldBytes                                         *prometheus.Desc
	requests, sparse, sparseFallbacks                              *prometheus.Desc
}

func newCollector(ix *cistern.Indexer, subscribers *atomic.Int64) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		ix: ix, subscribers: subscribers,
		repos:           d("cistern_repos", "Tracked repos, by state.", "state"),
		records:         d("cistern_records", "Records stored."),
		events:          d("cistern_events", "Events retained in the log."),
		newest:          d("cistern_event_newest_id", "Id of the newest event."),
		oldest:          d("cistern_event_oldest_id", "Id of the oldest retained event."),
		diskBytes:       d("cistern_store_size_bytes", "Size of the store on disk."),
		blockBytes:      d("cistern_store_block_bytes", "Bytes of record values held in the block store."),
		queue:           d("cistern_backfill_queue", "Repos waiting in the backfill queue."),
		inFlight:        d("cistern_backfill_in_flight", "Repos being backfilled now."),
		completed:       d("cistern_backfill_completed_total", "Backfills that reached a final state."),
		failed:          d("cistern_backfill_failed_total", "Backfills that failed and were queued for a retry."),
		rateLimited:     d("cistern_backfill_rate_limited_total", "Backfills deferred because their host was rate limited."),
		bytes:           d("cistern_backfill_bytes_total", "Response bytes fetched by backfills (getRepo and getBlocks CARs, sparse JSON answers)."),
		recordsWritten:  d("cistern_backfill_records_total", "Record changes written by backfills."),
		recordsRate:     d("cistern_backfill_records_per_second", "Backfill records written per second since the previous scrape."),
		hostsLimited:    d("cistern_backfill_hosts_rate_limited", "PDS hosts paused after a 429 now."),
		requests:        d("cistern_backfill_requests_total", "HTTP requests made to PDS hosts by backfills."),
		sparse:          d("cistern_backfill_sparse_total", "Backfills completed with a sparse (getBlocks) walk."),
		sparseFallbacks: d("cistern_backfill_sparse_fallbacks_total", "Backfills that began a sparse walk and fetched the repo whole instead."),
		subs:            d("cistern_stream_subscribers", "Open /stream connections."),
		subscriptions:   d("cistern_stream_subscriptions", "Event subscriptions running: the library's and /stream's."),
		heldCommits:     d("cistern_held_commits", "Live commits held for repos not synced yet, applied after their backfill."),
		heldBytes:       d("cistern_held_bytes", "Bytes the held live commits take in the store."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.repos, c.records, c.events, c.newest, c.oldest, c.diskBytes,
		c.blockBytes, c.queue, c.inFlight, c.completed, c.failed, c.rateLimited, c.bytes, c.recordsWritten,
		c.recordsRate, c.hostsLimited, c.subs, c.subscriptions, c.requests, c.sparse, c.sparseFallbacks,
		c.heldCommits, c.heldBytes} {
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
	for state, count := range st.Repos {
		g(c.repos, float64(count), state)
	}
	g(c.records, float64(st.Records))
	g(c.events, float64(st.Events))
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
	n(c.requests, bf.Requests)
	n(c.sparse, bf.Sparse)
	n(c.sparseFallbacks, bf.SparseFallbacks)
	n(c.recordsWritten, bf.RecordsWritten)
	g(c.recordsRate, c.rate(bf.RecordsWritten, time.Now()))
	g(c.hostsLimited, float64(bf.HostsRateLimited))
	g(c.subs, float64(c.subscribers.Load()))
	g(c.subscriptions, float64(st.Subscriptions))
	g(c.heldCommits, float64(st.HeldCommits))
	g(c.heldBytes, float64(st.HeldBytes))
}

// rate returns records per second since the previous scrape at least a
// second ago (the last value for closer scrapes; 0 on the first).
func (c *collector) rate(records int64, now time.Time) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastAt.IsZero() {
		c.lastAt, c.lastRecs = now, records
		return 0
	}
	if dt := now.Sub(c.lastAt); dt >= time.Second {
		c.lastRate = float64(records-c.lastRecs) / dt.Seconds()
		c.lastAt, c.lastRecs = now, records
	}
	return c.lastRate
}
