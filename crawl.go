package cistern

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
)

// crawlPendingLimit pauses the crawler while this many repos wait.
const crawlPendingLimit = 10_000

// crawlDone marks a finished enumeration in its cursor key, and
// crawlFallback prefixes the cursor of a listRepos fallback.
const (
	crawlDone     = "\x00done"
	crawlFallback = "\x00listRepos:"
)

// kickCrawl wakes the crawler after a filter change.
func (ix *Indexer) kickCrawl() {
	select {
	case ix.crawlKick <- struct{}{}:
	default:
	}
}

// crawlBase returns the http(s) base URL the crawler enumerates.
func (ix *Indexer) crawlBase() string {
	u := strings.TrimSuffix(ix.cfg.CrawlURL, "/")
	switch {
	case strings.HasPrefix(u, "wss://"):
		u = "https://" + strings.TrimPrefix(u, "wss://")
	case strings.HasPrefix(u, "ws://"):
		u = "http://" + strings.TrimPrefix(u, "ws://")
	}
	if i := strings.Index(u, "/xrpc/"); i >= 0 {
		u = u[:i]
	}
	return u
}

// crawl discovers repos that exist already: every repo of the relay in
// full-network mode, the repos holding each signal collection otherwise.
// Each enumeration's cursor is persisted, so a restart resumes it; a
// finished enumeration is not repeated until the filter changes.
func (ix *Indexer) crawl(ctx context.Context) error {
	for {
		f := ix.Filter()
		var jobs []string
		if f.FullNetwork() {
			jobs = append(jobs, "listRepos")
		} else {
			for _, s := range f.Spec().Signals {
				p, err := filter.ParsePattern(s)
				if err != nil || p.IsWildcard() {
					continue // listReposByCollection takes exact NSIDs only
				}
				jobs = append(jobs, "byCollection/"+s)
			}
		}
		for _, job := range jobs {
			if err := ix.crawlJob(ctx, job); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				ix.log.Warn("crawl failed; will retry", "job", job, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ix.crawlKick:
		case <-time.After(time.Minute):
		}
	}
}

func (ix *Indexer) crawlJob(ctx context.Context, job string) error {
	key := metaCrawlPrefix + job
	cursor := ""
	err := ix.st.View(ctx, func(tx store.ReadTx) error {
		v, err := tx.Meta(key)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		cursor = string(v)
		return err
	})
	if err != nil || cursor == crawlDone {
		return err
	}
	collection, bySignal := strings.CutPrefix(job, "byCollection/")
	// A cursor of the listRepos fallback is saved with a prefix, so that a
	// restart resumes the fallback rather than hand its cursor to
	// listReposByCollection.
	cursor, fallback := strings.CutPrefix(cursor, crawlFallback)
	for {
		if err := ix.waitQueue(ctx); err != nil {
			return err
		}
		var dids []string
		var next string
		if bySignal && !fallback {
			dids, next, err = ix.listPage(ctx, "com.atproto.sync.listReposByCollection", url.Values{"collection": {collection}}, cursor)
			var he *httpError
			if errors.As(err, &he) && he.status >= 400 && he.status < 500 && he.status != http.StatusTooManyRequests {
				// A bare PDS does not serve listReposByCollection: enumerate
				// its repos and ask each for its collections.
				ix.log.Info("listReposByCollection not served; falling back to listRepos + describeRepo", "host", ix.crawlBase())
				fallback, cursor = true, ""
				continue
			}
		} else {
			dids, next, err = ix.listPage(ctx, "com.atproto.sync.listRepos", nil, cursor)
		}
		if err != nil {
			return err
		}
		for _, did := range dids {
			if _, err := syntax.ParseDID(did); err != nil || ix.Filter().Excluded(did) {
				continue
			}
			reason := reasonNetwork
			if bySignal {
				reason = reasonSignal
				if fallback {
					ok, err := ix.holdsCollection(ctx, did, collection)
					var he *httpError
					switch {
					case errors.As(err, &he) && he.status == http.StatusBadRequest:
						continue // gone or inactive: nothing to track
					case err != nil:
						return fmt.Errorf("describeRepo %s: %w", did, err) // the page is done again
					case !ok:
						continue
					}
				}
			}
			unlock := ix.lock(did)
			err := ix.trackLocked(ctx, did, reason)
			unlock()
			if err != nil {
				return err
			}
		}
		cursor = next
		saved := cursor
		switch {
		case cursor == "" || len(dids) == 0:
			cursor, saved = crawlDone, crawlDone
		case fallback:
			saved = crawlFallback + cursor
		}
		if err := ix.write(ctx, func(tx store.Tx) error { return tx.PutMeta(key, []byte(saved)) }); err != nil {
			return err
		}
		if cursor == crawlDone {
			return nil
		}
	}
}

// waitQueue pauses while the pending queue is long.
func (ix *Indexer) waitQueue(ctx context.Context) error {
	for {
		var pending int64
		err := ix.st.View(ctx, func(tx store.ReadTx) error {
			c, err := tx.Counts()
			pending = c.ReposByState[store.StatePending]
			return err
		})
		if err != nil || pending < crawlPendingLimit {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

func (ix *Indexer) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := ix.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b [512]byte
		n, _ := resp.Body.Read(b[:])
		return &httpError{status: resp.StatusCode, body: string(b[:n])}
	}
	return json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 16<<20)).Decode(out)
}

func (ix *Indexer) listPage(ctx context.Context, method string, q url.Values, cursor string) ([]string, string, error) {
	if q == nil {
		q = url.Values{}
	}
	q.Set("limit", "1000")
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var out struct {
		Cursor string `json:"cursor"`
		Repos  []struct {
			DID    string `json:"did"`
			Active *bool  `json:"active"`
		} `json:"repos"`
	}
	if err := ix.getJSON(ctx, ix.crawlBase()+"/xrpc/"+method+"?"+q.Encode(), &out); err != nil {
		return nil, "", fmt.Errorf("%s: %w", method, err)
	}
	dids := make([]string, 0, len(out.Repos))
	for _, r := range out.Repos {
		dids = append(dids, r.DID)
	}
	return dids, out.Cursor, nil
}

// holdsCollection asks the repo's host whether it has records in a
// collection (com.atproto.repo.describeRepo).
func (ix *Indexer) holdsCollection(ctx context.Context, did, collection string) (bool, error) {
	var out struct {
		Collections []string `json:"collections"`
	}
	u := ix.crawlBase() + "/xrpc/com.atproto.repo.describeRepo?repo=" + url.QueryEscape(did)
	if err := ix.getJSON(ctx, u, &out); err != nil {
		return false, err
	}
	for _, c := range out.Collections {
		if c == collection {
			return true, nil
		}
	}
	return false, nil
}
