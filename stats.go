package cistern

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/internal/handles"
	"github.com/cistern-dev/cistern/internal/ingest"
	"github.com/cistern-dev/cistern/internal/progress"
	"github.com/cistern-dev/cistern/store"
)

// Stats is a snapshot of what the Indexer holds and has done.
type Stats struct {
	// Repos counts repos by state name.
	Repos map[string]int64 `json:"repos"`
	// Records, Events (retained) and Blocks are store counters.
	Records    int64 `json:"records"`
	Events     int64 `json:"events"`
	Blocks     int64 `json:"blocks"`
	BlockBytes int64 `json:"blockBytes"`
	// NewestEvent is the id of the newest event.
	NewestEvent uint64 `json:"newestEvent"`
	// OldestEvent is the id of the oldest retained event.
	OldestEvent uint64 `json:"oldestEvent"`
	// Subscriptions is the number of event subscriptions running (library
	// and WebSocket alike).
	Subscriptions int `json:"subscriptions"`
	// Queued is the number of repos in the backfill queue.
	Queued int64 `json:"queued"`
	// DiskBytes is the size of the store on disk.
	DiskBytes int64 `json:"diskBytes"`
	// Rejected counts live commits rejected (and their repos resynced), by
	// reason, since the store was created.
	Rejected map[RejectReason]int64 `json:"rejected"`
	// Backfill reports the scheduler's work.
	Backfill backfill.Stats `json:"backfill"`
	// HeldCommits and HeldBytes count the live commits held for repos that
	// are not synced yet (applied after their backfill), and the bytes they
	// take in the store. Zero for a store that cannot count them (see
	// store.HeldCounter).
	HeldCommits int64 `json:"heldCommits"`
	HeldBytes   int64 `json:"heldBytes"`
	// HandleChecks reports the handle checks run beside backfill and live
	// sync (all zero with a resolver that is no resolver.HandleChecker).
	HandleChecks HandleCheckStats `json:"handleChecks"`
	// Firehose reports each firehose source followed since Open, by URL.
	Firehose []FirehoseStats `json:"firehose"`
	// LiveOps counts the record ops of live commits applied since Open.
	LiveOps int64 `json:"liveOps"`
	// RecentRejects lists the last live commits rejected (at most 16),
	// newest first, since Open.
	RecentRejects []RejectedCommit `json:"recentRejects"`
	// BackfillFailures lists the last backfill failures (at most 32),
	// newest first, since Open.
	BackfillFailures []backfill.Failure `json:"backfillFailures"`
	// Work lists long work (crawls; rebuilds) running or ended within the
	// last hour, with its progress (see WorkProgress).
	Work []WorkProgress `json:"work"`
	// Backlinks reports the backlink index (Config.Backlinks).
	Backlinks backlinks.Status `json:"backlinks"`
}

// FirehoseStats is one firehose source: its URL, whether it is connected,
// messages and reconnects, the last message's seq, arrival and event time,
// and the saved cursor with its event time. Its ages agree with the
// metrics: cistern_firehose_lag_seconds is now minus LastStamped, and
// cistern_firehose_cursor_age_seconds now minus CursorStamped.
type FirehoseStats = ingest.SourceStats

// RejectedCommit is one live commit that was not applied (its repo is
// resynced): DID ("" for a frame too large to be read), Rev, Reason, a
// Message saying what was wrong, and when.
type RejectedCommit = ingest.Rejection

// WorkProgress is a piece of long work with its progress: Done of Total
// units (Total 0: not known), the recent rate PerSecond, and ETASeconds
// (-1: not known, 0: done).
type WorkProgress = progress.Snapshot

// progressLogInterval is how often Run logs the progress of long work.
const progressLogInterval = time.Minute

// BackfillHosts returns the backfill work of each PDS host seen recently
// (see backfill.Scheduler.Hosts), in no particular order.
func (ix *Indexer) BackfillHosts() []backfill.HostStats { return ix.bf.Hosts() }

// HandleCheckStats counts handle checks since Open (see
// Config.HandleCheckConcurrency): repos Queued for a check and Running;
// checks that answered (Checked), changed a stored handle (Changed), could
// not resolve the DID (Failed), or were not queued because the queue was
// full (Dropped; checked again at the repo's next resolution).
type HandleCheckStats = handles.Stats

// Stats returns counts of repos by state, records, events and bytes on
// disk, and the work done so far.
func (ix *Indexer) Stats(ctx context.Context) (*Stats, error) {
	var links backlinks.Status
	c, err := ix.q.StoreStats(ctx, func(tx store.ReadTx) (err error) {
		links, err = ix.links.Status(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &Stats{Repos: map[string]int64{}, Records: c.Records, Events: c.Events, Blocks: c.Blocks, BlockBytes: c.BlockBytes,
		NewestEvent: c.NewestEvent, OldestEvent: c.OldestEvent, Rejected: c.Rejected, Queued: c.Queued,
		HeldCommits: c.HeldCommits, HeldBytes: c.HeldBytes, Backlinks: links}
	for st, n := range c.ReposByState {
		s.Repos[st.String()] = n
	}
	s.DiskBytes = ix.st.Size()
	s.Backfill = ix.bf.Stats()
	s.Subscriptions = ix.events.Subscriptions()
	s.Firehose = ix.ing.Sources()
	s.LiveOps = ix.ing.LiveOps()
	s.RecentRejects = ix.ing.Rejections()
	s.BackfillFailures = ix.bf.RecentFailures()
	s.Work = ix.work.Snapshot()
	if ix.handles != nil {
		s.HandleChecks = ix.handles.Stats()
	}
	return s, nil
}

// Gatherer returns the Indexer's own Prometheus metrics (firehose messages,
// lag and cursors; live commits applied, skipped and rejected by reason),
// for a host to serve or merge with its own registry. Package httpapi
// serves them at /metrics along with store and backfill gauges.
func (ix *Indexer) Gatherer() prometheus.Gatherer { return ix.ing.Metrics().Registry() }
