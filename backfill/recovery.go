package backfill

import (
	"context"
	"net/url"
	"sync"

	"github.com/cistern-dev/cistern/store"
)

// recovery remembers, per PDS host, the repos whose last attempt failed on
// the host itself (no answer, a timeout, a 5xx, a body cut short), so that
// they are retried as soon as a request to that host succeeds again rather
// than after their backoff, which may be an hour. The retried repos are
// only made due: Concurrency and PerHost bound them like any other. It
// costs one map entry per such repo (about 100 bytes) and forgets
// everything on restart, when the repos wait for their backoff again.
type recovery struct {
	mu     sync.Mutex
	failed map[string]map[string]struct{} // host -> DIDs
}

func newRecovery() *recovery { return &recovery{failed: make(map[string]map[string]struct{})} }

// hostFailure reports whether a failure kind says the host itself failed.
func hostFailure(kind string) bool {
	switch kind {
	case KindNetwork, KindTimeout, KindHTTP, KindTruncated:
		return true
	}
	return false
}

// failedOn remembers that did's attempt failed on host.
func (rc *recovery) failedOn(host, did string) {
	if rc == nil || host == "" {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	set := rc.failed[host]
	if set == nil {
		set = make(map[string]struct{})
		rc.failed[host] = set
	}
	set[did] = struct{}{}
}

// recovered returns, and forgets, the repos that failed on host. A nil
// recovery remembers nothing.
func (rc *recovery) recovered(host string) []string {
	if rc == nil {
		return nil
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	set := rc.failed[host]
	if len(set) == 0 {
		return nil
	}
	delete(rc.failed, host)
	out := make([]string, 0, len(set))
	for did := range set {
		out = append(out, did)
	}
	return out
}

// hostOf returns the host of a PDS URL, "" if it has none.
func hostOf(pds string) string {
	u, err := url.Parse(pds)
	if err != nil {
		return ""
	}
	return u.Host
}

// hostAnswered is called when a request to host succeeded: the repos that
// failed on it and still wait in the error state are made due now.
func (s *Scheduler) hostAnswered(ctx context.Context, host string) {
	dids := s.recovery.recovered(host)
	if len(dids) == 0 {
		return
	}
	now := s.opts.Now()
	n := 0
	err := s.opts.Writer.Write(ctx, func(tx store.Tx) error {
		n = 0
		for _, did := range dids {
			r, err := trackedRepo(tx, did)
			if err != nil {
				return err
			}
			if r == nil || r.State != store.StateError || hostOf(r.PDS) != host || !r.NextAttempt.After(now) {
				continue // synced, retried or moved meanwhile
			}
			r.NextAttempt = now
			if err := tx.PutRepo(r); err != nil {
				return err
			}
			if err := tx.Enqueue(did, now); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		// They keep their backoff; nothing is lost.
		s.opts.Logger.Warn("backfill: could not retry the repos of a host that answers again", "host", host, "repos", len(dids), "err", err)
		return
	}
	if n > 0 {
		s.opts.Logger.Info("backfill: host answers again; retrying its failed repos now", "host", host, "repos", n)
		s.Kick()
	}
}
