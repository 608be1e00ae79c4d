package cistern

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// crawlPendingLimit pauses the crawler while this many repos wait.
const crawlPendingLimit = 10_000

// The crawler's jobs, named by their meta key after metaCrawlPrefix: the
// full-network enumeration, and one per signal (crawlSignalPrefix and the
// signal as written in the filter).
const (
	crawlNetworkJob   = "listRepos"
	crawlSignalPrefix = "byCollection/"
)

// What a crawl's key holds besides a cursor: crawlStart marks an
// enumeration begun, crawlDone a finished one, and crawlFallback prefixes
// the cursor of a listRepos walk for a signal.
const (
	crawlStart    = "\x00start"
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
// full-network mode, the repos holding a record of each signal otherwise.
// An exact signal is asked of listReposByCollection; a wildcard signal,
// which that method cannot take, walks listRepos and asks each repo's PDS
// for its collections (describeRepo), as does an exact signal on a host
// that does not serve listReposByCollection. Each enumeration's cursor is
// persisted, so a restart resumes it; a finished enumeration is not
// repeated until a filter change removes and adds its signal (or turns
// FullNetwork off and on) again, which deletes its cursor (see
// resetCrawls).
func (ix *Indexer) crawl(ctx context.Context) error {
	for {
		f := ix.Filter()
		var jobs []string
		if f.FullNetwork() {
			jobs = append(jobs, crawlNetworkJob)
		} else {
			for _, s := range f.Spec().Signals {
				jobs = append(jobs, crawlSignalPrefix+s)
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
	signal, bySignal := strings.CutPrefix(job, crawlSignalPrefix)
	var pattern filter.Pattern
	if bySignal {
		var err error
		if pattern, err = filter.ParsePattern(signal); err != nil {
			return err // the filter was validated: not reached
		}
	}
	key := metaCrawlPrefix + job
	// A wildcard is walked with listRepos from the start.
	saved, err := ix.startCrawl(ctx, key, encodeCrawlCursor("", pattern.IsWildcard()))
	if err != nil || saved == crawlDone {
		return err
	}
	cursor, fallback := decodeCrawlCursor(saved)
	for {
		if err := ix.waitQueue(ctx); err != nil {
			return err
		}
		var dids []string
		var next string
		if bySignal && !fallback {
			dids, next, err = ix.listPage(ctx, "com.atproto.sync.listReposByCollection", url.Values{"collection": {signal}}, cursor)
			if notServed(err) {
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
			reason := repos.ReasonNetwork
			if bySignal {
				reason = repos.ReasonSignal
				if fallback {
					if tracked, err := ix.tracked(ctx, did); err != nil {
						return err
					} else if tracked {
						continue // nothing to learn: spare its PDS the question
					}
					ok, err := ix.holdsSignal(ctx, did, pattern)
					if err != nil {
						return fmt.Errorf("%s: %w", did, err) // the page is done again
					}
					if !ok {
						continue
					}
				}
			}
			unlock := ix.lock(did)
			err := ix.repos.Track(ctx, did, reason)
			unlock()
			if err != nil {
				return err
			}
		}
		nextSaved := encodeCrawlCursor(next, fallback)
		if next == "" || len(dids) == 0 {
			nextSaved = crawlDone
		}
		if ok, err := ix.advanceCrawl(ctx, key, saved, nextSaved); err != nil || !ok {
			// !ok: a filter change reset this crawl (see resetCrawls), and
			// kicked the crawler to start it again.
			return err
		}
		if nextSaved == crawlDone {
			return nil
		}
		saved, cursor = nextSaved, next
	}
}

// notServed reports whether err says that the host does not serve the
// method asked: a client error other than a rate limit, or 501
// (MethodNotImplemented, what an XRPC server answers for a method it
// does not know).
func notServed(err error) bool {
	var he *httpError
	if !errors.As(err, &he) {
		return false
	}
	return he.status == http.StatusNotImplemented ||
		he.status >= 400 && he.status < 500 && he.status != http.StatusTooManyRequests
}

// resetCrawls deletes, in the transaction that puts the filter in force,
// the saved crawls that a change from one spec to the next starts afresh:
// of every signal added or removed, and of the full network when
// FullNetwork is turned on or off. A signal added again (or FullNetwork
// turned on again) is thus crawled again for the repos that wrote while it
// was off, and a crawl under way for one removed stops (advanceCrawl).
func resetCrawls(tx store.Tx, from, to filter.Spec) error {
	var keys []string
	if from.FullNetwork != to.FullNetwork {
		keys = append(keys, crawlNetworkJob)
	}
	for _, s := range from.Signals {
		if !slices.Contains(to.Signals, s) {
			keys = append(keys, crawlSignalPrefix+s)
		}
	}
	for _, s := range to.Signals {
		if !slices.Contains(from.Signals, s) {
			keys = append(keys, crawlSignalPrefix+s)
		}
	}
	for _, k := range keys {
		if err := tx.DeleteMeta(metaCrawlPrefix + k); err != nil {
			return err
		}
	}
	return nil
}

// encodeCrawlCursor is what is saved of a crawl's cursor. A cursor of a
// listRepos walk for a signal is saved with a prefix, so that a restart
// resumes the walk rather than hand its cursor to listReposByCollection;
// the start of an enumeration is saved too (crawlStart), so that a filter
// change that deletes the key (resetCrawls) can be told from a crawl that
// has not begun.
func encodeCrawlCursor(cursor string, fallback bool) string {
	switch {
	case fallback:
		return crawlFallback + cursor
	case cursor == "":
		return crawlStart
	}
	return cursor
}

// decodeCrawlCursor reverses encodeCrawlCursor.
func decodeCrawlCursor(saved string) (cursor string, fallback bool) {
	if saved == crawlStart {
		return "", false
	}
	return strings.CutPrefix(saved, crawlFallback)
}

// startCrawl returns the saved cursor of the crawl at key, saving start
// first when there is none.
func (ix *Indexer) startCrawl(ctx context.Context, key, start string) (string, error) {
	var saved []byte
	read := func(tx store.ReadTx) error {
		v, err := tx.Meta(key)
		if errors.Is(err, store.ErrNotFound) {
			saved = nil
			return nil
		}
		saved = v
		return err
	}
	if err := ix.st.View(ctx, read); err != nil || saved != nil {
		return string(saved), err
	}
	err := ix.write(ctx, func(tx store.Tx) error {
		if err := read(tx); err != nil || saved != nil {
			return err
		}
		saved = []byte(start)
		return tx.PutMeta(key, saved)
	})
	return string(saved), err
}

// advanceCrawl saves next as the cursor of the crawl at key if prev is
// still saved there. It reports false, saving nothing, when a filter change
// has deleted the key since (resetCrawls): what was enumerated before may
// predate the change.
func (ix *Indexer) advanceCrawl(ctx context.Context, key, prev, next string) (bool, error) {
	ok := false
	err := ix.write(ctx, func(tx store.Tx) error {
		v, err := tx.Meta(key)
		if errors.Is(err, store.ErrNotFound) || err == nil && string(v) != prev {
			ok = false
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		return tx.PutMeta(key, []byte(next))
	})
	return ok, err
}

// tracked reports whether did is tracked (held and not deleted).
func (ix *Indexer) tracked(ctx context.Context, did string) (bool, error) {
	var ok bool
	err := ix.st.View(ctx, func(tx store.ReadTx) error {
		r, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		ok = err == nil && r.State != store.StateDeleted
		return err
	})
	return ok, err
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

// holdsSignal asks the repo's PDS (com.atproto.repo.describeRepo) whether
// it holds records in a collection p matches. A repo whose identity is gone,
// or that its PDS answers with 400 (deleted or inactive), holds none. A
// failure of a PDS other than the crawled host, other than a rate limit, is
// logged and counts as none too, so that one host down does not stall a
// walk of the network: the repo's next signal write on the firehose tracks
// it. A DID that does not resolve (a did:web host down, a tombstoned or
// malformed document) is likewise logged and skipped: retrying the page
// would stall the walk on it for good. Any other failure is returned, for
// the page to be done again.
func (ix *Indexer) holdsSignal(ctx context.Context, did string, p filter.Pattern) (bool, error) {
	ident, err := ix.res.Resolve(ctx, syntax.DID(did))
	if errors.Is(err, resolver.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		ix.log.Warn("crawl: DID does not resolve; repo skipped", "did", did, "err", err)
		return false, nil
	}
	if ident.PDS == "" {
		return false, nil
	}
	var out struct {
		Collections []string `json:"collections"`
	}
	pds := strings.TrimSuffix(ident.PDS, "/")
	err = ix.getJSON(ctx, pds+"/xrpc/com.atproto.repo.describeRepo?repo="+url.QueryEscape(did), &out)
	var he *httpError
	switch {
	case errors.As(err, &he) && he.status == http.StatusBadRequest:
		return false, nil
	case err != nil && ctx.Err() == nil && hostOf(pds) != hostOf(ix.crawlBase()) &&
		!(errors.As(err, &he) && he.status == http.StatusTooManyRequests):
		ix.log.Warn("crawl: describeRepo failed; repo skipped", "did", did, "pds", pds, "err", err)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("describeRepo: %w", err)
	}
	return slices.ContainsFunc(out.Collections, p.Match), nil
}

// hostOf returns the host (and port) of a URL, or u when it does not parse.
func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		return p.Host
	}
	return u
}
