package cistern

import (
	"context"
	"time"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/store"
	"github.com/prometheus/client_golang/prometheus"
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
	// Backlinks reports the backlink index (Config.Backlinks).
	Backlinks backlinks.Status `json:"backlinks"`
}

// HandleCheckStats counts handle checks since Open (see
// Config.HandleCheckConcurrency).
type HandleCheckStats struct {
	// Queued repos wait for a check; Running are being checked.
	Queued  int `json:"queued"`
	Running int `json:"running"`
	// Checked checks answered, of which Changed changed a stored handle;
	// Failed could not resolve the DID; Dropped were not queued because
	// the queue was full (checked again at the repo's next resolution).
	Checked int64 `json:"checked"`
	Changed int64 `json:"changed"`
	Failed  int64 `json:"failed"`
	Dropped int64 `json:"dropped"`
}

// Stats returns counts of repos by state, records, events and bytes on
// disk, and the work done so far.
func (ix *Indexer) Stats(ctx context.Context) (*Stats, error) {
	s := &Stats{Repos: map[string]int64{}}
	err := ix.view(ctx, func(tx store.ReadTx) error {
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		for st, n := range c.ReposByState {
			s.Repos[st.String()] = n
		}
		s.Records, s.Events, s.Blocks, s.BlockBytes = c.Records, c.Events, c.Blocks, c.BlockBytes
		s.OldestEvent, s.NewestEvent, err = tx.EventBounds()
		if err != nil {
			return err
		}
		if s.Backlinks, err = ix.links.Status(tx); err != nil {
			return err
		}
		if s.Rejected, err = repos.RejectCounts(tx); err != nil {
			return err
		}
		if hc, ok := tx.(store.HeldCounter); ok {
			if s.HeldCommits, s.HeldBytes, err = hc.HeldCommits(); err != nil {
				return err
			}
		}
		return tx.ScanQueue(func(string, time.Time) (bool, error) {
			s.Queued++
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	s.DiskBytes = ix.st.Size()
	s.Backfill = ix.bf.Stats()
	s.Subscriptions = ix.events.Subscriptions()
	if ix.handles != nil {
		h := ix.handles.Stats()
		s.HandleChecks = HandleCheckStats{Queued: h.Queued, Running: h.Running, Checked: h.Checked,
			Changed: h.Changed, Failed: h.Failed, Dropped: h.Dropped}
	}
	return s, nil
}

// Gatherer returns the Indexer's own Prometheus metrics (firehose messages,
// lag and cursors; live commits applied, skipped and rejected by reason),
// for a host to serve or merge with its own registry. Package httpapi
// serves them at /metrics along with store and backfill gauges.
func (ix *Indexer) Gatherer() prometheus.Gatherer { return ix.ing.Metrics().Registry() }
