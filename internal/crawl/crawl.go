// Package crawl discovers repos that existed before cistern started
// following the firehose: every repo of the crawled host in full-network
// mode, and otherwise the repos holding a record of each signal collection
// (com.atproto.sync.listReposByCollection, or listRepos and each repo's
// describeRepo where that is not served, and for wildcard signals).
//
// A repo found is tracked through internal/repos (Table.Track), which
// queues its backfill. Questions to PDS hosts (describeRepo) go through
// the backfill scheduler's per-host limits and 429 handling (HostGetter),
// so the crawl and the backfills share each host's limits. Each
// enumeration's cursor is persisted in the store's meta; a filter change
// resets the crawls it starts afresh, in its own transaction (Reset).
package crawl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/progress"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// HostGetter sends a GET to a PDS host under the per-host limits shared
// with backfill (*backfill.Scheduler.Get): a 429, or a host paused after
// one, is an error wrapping backfill.ErrRateLimited; any other answer is
// returned with up to limit bytes of its body.
type HostGetter interface {
	Get(ctx context.Context, u string, limit int64) (status int, body []byte, err error)
}

// Config is what a Crawler needs. Every field is required.
type Config struct {
	// Store is read for repo states, the queue's length and the cursors.
	Store store.Store
	// Write carries the cursor saves.
	Write repos.Writer
	// Repos tracks the repos found.
	Repos *repos.Table
	// Resolver finds a repo's PDS, for describeRepo.
	Resolver resolver.Resolver
	// Hosts asks PDS hosts (describeRepo), under the per-host limits.
	Hosts HostGetter
	// HTTPClient asks the crawled host (listRepos, listReposByCollection).
	HTTPClient *http.Client
	// URL is the host enumerated (a relay or a PDS), http(s) or ws(s).
	URL string
	// Filter returns the filter in force.
	Filter func() *filter.Filter
	// Logger receives the crawl's warnings.
	Logger *slog.Logger
	// Progress, if set, shows each crawl as it lists repos. Optional.
	Progress *progress.Board
}

// Crawler runs the discovery crawls. Create it with New; Run runs it.
type Crawler struct {
	cfg  Config
	st   store.Store
	res  resolver.Resolver
	log  *slog.Logger
	kick chan struct{}
}

// New returns a Crawler over cfg. Nothing runs until Run.
func New(cfg Config) *Crawler {
	return &Crawler{cfg: cfg, st: cfg.Store, res: cfg.Resolver, log: cfg.Logger, kick: make(chan struct{}, 1)}
}

// MetaPrefix prefixes the meta keys of the crawls' cursors.
const MetaPrefix = "crawl/"

// maxBody bounds the JSON read of one answer.
const maxBody = 16 << 20

// SignalKey returns the meta key of the crawl for a signal.
func SignalKey(signal string) string { return MetaPrefix + crawlSignalPrefix + signal }

// crawlPendingLimit pauses the crawler while this many repos wait.
const crawlPendingLimit = 10_000

// The crawler's jobs, named by their meta key after MetaPrefix: the
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
	// StartMarker is saved as the cursor of an enumeration begun.
	StartMarker   = "\x00start"
	crawlStart    = StartMarker
	crawlDone     = "\x00done"
	crawlFallback = "\x00listRepos:"
)

// Kick wakes the crawler after a filter change.
func (c *Crawler) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// crawlBase returns the http(s) base URL the crawler enumerates.
func (c *Crawler) crawlBase() string {
	u := strings.TrimSuffix(c.cfg.URL, "/")
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

// Run discovers repos that exist already, until ctx ends: every repo of the relay in
// full-network mode, the repos holding a record of each signal otherwise.
// An exact signal is asked of listReposByCollection; a wildcard signal,
// which that method cannot take, walks listRepos and asks each repo's PDS
// for its collections (describeRepo), as does an exact signal on a host
// that does not serve listReposByCollection. Each enumeration's cursor is
// persisted, so a restart resumes it; a finished enumeration is not
// repeated until a filter change removes and adds its signal (or turns
// FullNetwork off and on) again, which deletes its cursor (see
// resetCrawls).
func (c *Crawler) Run(ctx context.Context) error {
	for {
		f := c.cfg.Filter()
		var jobs []string
		if f.FullNetwork() {
			jobs = append(jobs, crawlNetworkJob)
		} else {
			for _, s := range f.Spec().Signals {
				jobs = append(jobs, crawlSignalPrefix+s)
			}
		}
		for _, job := range jobs {
			if err := c.crawlJob(ctx, job); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.log.Warn("crawl failed; will retry", "job", job, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-time.After(time.Minute):
		}
	}
}

func (c *Crawler) crawlJob(ctx context.Context, job string) (err error) {
	listed := func(int64) {}
	signal, bySignal := strings.CutPrefix(job, crawlSignalPrefix)
	var pattern filter.Pattern
	if bySignal {
		var err error
		if pattern, err = filter.ParsePattern(signal); err != nil {
			return err // the filter was validated: not reached
		}
	}
	key := MetaPrefix + job
	// A wildcard is walked with listRepos from the start.
	saved, err := c.StartCursor(ctx, key, encodeCrawlCursor("", pattern.IsWildcard()))
	if err != nil || saved == crawlDone {
		return err
	}
	cursor, fallback := decodeCrawlCursor(saved)
	if c.cfg.Progress != nil {
		what := "crawl of the full network (repos listed)"
		if bySignal {
			what = "crawl for signal " + signal + " (repos listed)"
		}
		w := c.cfg.Progress.Start(what, "repos", 0)
		defer func() { w.Finish(err) }()
		listed = w.Add
	}
	for {
		if err := c.waitQueue(ctx); err != nil {
			return err
		}
		var dids []string
		var next string
		if bySignal && !fallback {
			dids, next, err = c.listPage(ctx, "com.atproto.sync.listReposByCollection", url.Values{"collection": {signal}}, cursor)
			if notServed(err) {
				// A bare PDS does not serve listReposByCollection: enumerate
				// its repos and ask each for its collections.
				c.log.Info("listReposByCollection not served; falling back to listRepos + describeRepo", "host", c.crawlBase())
				fallback, cursor = true, ""
				continue
			}
		} else {
			dids, next, err = c.listPage(ctx, "com.atproto.sync.listRepos", nil, cursor)
		}
		if err != nil {
			return err
		}
		listed(int64(len(dids)))
		for _, did := range dids {
			if _, err := syntax.ParseDID(did); err != nil || c.cfg.Filter().Excluded(did) {
				continue
			}
			reason := repos.ReasonNetwork
			if bySignal {
				reason = repos.ReasonSignal
				if fallback {
					if tracked, err := c.tracked(ctx, did); err != nil {
						return err
					} else if tracked {
						continue // nothing to learn: spare its PDS the question
					}
					ok, err := c.holdsSignal(ctx, did, pattern)
					if err != nil {
						return fmt.Errorf("%s: %w", did, err) // the page is done again
					}
					if !ok {
						continue
					}
				}
			}
			unlock := c.cfg.Repos.Lock(did)
			err := c.cfg.Repos.Track(ctx, did, reason)
			unlock()
			if err != nil {
				return err
			}
		}
		nextSaved := encodeCrawlCursor(next, fallback)
		if next == "" || len(dids) == 0 {
			nextSaved = crawlDone
		}
		if ok, err := c.AdvanceCursor(ctx, key, saved, nextSaved); err != nil || !ok {
			// !ok: a filter change reset this crawl (see Reset), and
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

// Reset deletes, in the transaction that puts the filter in force,
// the saved crawls that a change from one spec to the next starts afresh:
// of every signal added or removed, and of the full network when
// FullNetwork is turned on or off. A signal added again (or FullNetwork
// turned on again) is thus crawled again for the repos that wrote while it
// was off, and a crawl under way for one removed stops (AdvanceCursor).
func Reset(tx store.Tx, from, to filter.Spec) error {
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
		if err := tx.DeleteMeta(MetaPrefix + k); err != nil {
			return err
		}
	}
	return nil
}

// encodeCrawlCursor is what is saved of a crawl's cursor. A cursor of a
// listRepos walk for a signal is saved with a prefix, so that a restart
// resumes the walk rather than hand its cursor to listReposByCollection;
// the start of an enumeration is saved too (crawlStart), so that a filter
// change that deletes the key (Reset) can be told from a crawl that
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

// StartCursor returns the saved cursor of the crawl at key, saving start
// first when there is none.
func (c *Crawler) StartCursor(ctx context.Context, key, start string) (string, error) {
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
	if err := c.st.View(ctx, read); err != nil || saved != nil {
		return string(saved), err
	}
	err := c.cfg.Write.Write(ctx, func(tx store.Tx) error {
		if err := read(tx); err != nil || saved != nil {
			return err
		}
		saved = []byte(start)
		return tx.PutMeta(key, saved)
	})
	return string(saved), err
}

// AdvanceCursor saves next as the cursor of the crawl at key if prev is
// still saved there. It reports false, saving nothing, when a filter change
// has deleted the key since (Reset): what was enumerated before may
// predate the change.
func (c *Crawler) AdvanceCursor(ctx context.Context, key, prev, next string) (bool, error) {
	ok := false
	err := c.cfg.Write.Write(ctx, func(tx store.Tx) error {
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
func (c *Crawler) tracked(ctx context.Context, did string) (bool, error) {
	var ok bool
	err := c.st.View(ctx, func(tx store.ReadTx) error {
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
func (c *Crawler) waitQueue(ctx context.Context) error {
	for {
		var pending int64
		err := c.st.View(ctx, func(tx store.ReadTx) error {
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

func (c *Crawler) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b [512]byte
		n, _ := resp.Body.Read(b[:])
		return &httpError{status: resp.StatusCode, body: string(b[:n])}
	}
	return json.NewDecoder(http.MaxBytesReader(nil, resp.Body, maxBody)).Decode(out)
}

func (c *Crawler) listPage(ctx context.Context, method string, q url.Values, cursor string) ([]string, string, error) {
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
	if err := c.getJSON(ctx, c.crawlBase()+"/xrpc/"+method+"?"+q.Encode(), &out); err != nil {
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
func (c *Crawler) holdsSignal(ctx context.Context, did string, p filter.Pattern) (bool, error) {
	ident, err := c.res.Resolve(ctx, syntax.DID(did))
	if errors.Is(err, resolver.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		c.log.Warn("crawl: DID does not resolve; repo skipped", "did", did, "err", err)
		return false, nil
	}
	if ident.PDS == "" {
		return false, nil
	}
	var out struct {
		Collections []string `json:"collections"`
	}
	pds := strings.TrimSuffix(ident.PDS, "/")
	status, body, err := c.cfg.Hosts.Get(ctx, pds+"/xrpc/com.atproto.repo.describeRepo?repo="+url.QueryEscape(did), maxBody)
	if err == nil && status != http.StatusOK {
		err = &httpError{status: status, body: string(body[:min(len(body), 512)])}
	}
	if err == nil {
		err = json.Unmarshal(body, &out)
	}
	var he *httpError
	switch {
	case errors.As(err, &he) && he.status == http.StatusBadRequest:
		return false, nil
	case err != nil && ctx.Err() == nil && hostOf(pds) != hostOf(c.crawlBase()) &&
		!errors.Is(err, backfill.ErrRateLimited):
		c.log.Warn("crawl: describeRepo failed; repo skipped", "did", did, "pds", pds, "err", err)
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
