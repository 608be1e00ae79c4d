package httpapi

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/progress"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/tapcompat"
)

// StatusVersion is the version of the /status.json document. Fields are
// only ever added within a version; a field removed or changed in meaning
// takes a new version.
const StatusVersion = 1

// Defaults of the status sampler.
const (
	// DefaultStatusInterval is how often Status.Run samples.
	DefaultStatusInterval = 10 * time.Second
	// DefaultStatusWindow is how much history Status keeps.
	DefaultStatusWindow = time.Hour
	// DefaultStatusHosts is how many hosts /status.json lists (the worst
	// ones) when ?hosts= is not given; MaxStatusHosts is the most it lists.
	DefaultStatusHosts = 25
	MaxStatusHosts     = 1000
)

// Thresholds of the health verdict in StatusReport.Problems.
const (
	// A firehose source whose newest message is older than this is
	// falling behind (or silent).
	lagProblem = 60 * time.Second
	// maxConsumers bounds the consumers /status.json lists.
	maxConsumers = 100
	// maxErrors bounds StatusReport.Errors.
	maxErrors = 20
)

// StatusOptions configure a Status. Zero values mean the defaults.
type StatusOptions struct {
	// Interval is how often Run samples. Default DefaultStatusInterval
	// (10 s).
	Interval time.Duration
	// Window is how much history is kept. Default DefaultStatusWindow
	// (1 h); Window/Interval samples in all.
	Window time.Duration
	// Tap, when set, adds its outbox's figures to its consumer.
	Tap *tapcompat.Service
	// Logger receives, every LogInterval, a progress line for a backfill
	// under way (repos done of all, rate, ETA). Default: nothing logged.
	Logger *slog.Logger
	// LogInterval is how often Run logs progress. Default one minute.
	LogInterval time.Duration
	// StallAfter is how long a durable consumer with events waiting may go
	// without acknowledging before it is reported stalled. Default one
	// minute.
	StallAfter time.Duration
}

func (o StatusOptions) withDefaults() StatusOptions {
	if o.Interval <= 0 {
		o.Interval = DefaultStatusInterval
	}
	if o.Window <= 0 {
		o.Window = DefaultStatusWindow
	}
	if o.LogInterval <= 0 {
		o.LogInterval = time.Minute
	}
	if o.StallAfter <= 0 {
		o.StallAfter = time.Minute
	}
	return o
}

// Status assembles the status report of an Indexer (served by Server at
// GET /status.json, and drawn by the page at GET /status) and keeps its
// recent history: a ring of samples taken every Interval over the last
// Window, which Run fills. Without Run the report has the current figures
// and no history. It is safe for concurrent use.
type Status struct {
	ix   *cistern.Indexer
	opts StatusOptions

	mu      sync.Mutex
	ring    []Sample // oldest first once full: ring[next:] then ring[:next]
	next    int
	full    bool
	last    *sampleBase
	started time.Time
	board   progress.Board
	works   map[string]*progress.Work // long work seen in the samples, by name, while it runs
}

// sampleBase is what the next sample's rates are measured from.
type sampleBase struct {
	at              time.Time
	records, events int64
}

// NewStatus returns a Status over ix. It starts no goroutine: Run samples.
func NewStatus(ix *cistern.Indexer, opts StatusOptions) *Status {
	opts = opts.withDefaults()
	n := max(int(opts.Window/opts.Interval), 2)
	return &Status{ix: ix, opts: opts, ring: make([]Sample, 0, n), started: time.Now(), works: map[string]*progress.Work{}}
}

// Run samples every Interval until ctx ends, and logs the progress of a
// backfill under way every LogInterval when a Logger is set. It returns
// when ctx ends.
func (s *Status) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	lastLog := time.Now()
	s.Sample(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.Sample(ctx)
		if s.opts.Logger != nil && time.Since(lastLog) >= s.opts.LogInterval {
			lastLog = time.Now()
			s.mu.Lock()
			w := s.works[workBackfill] // the backlink build logs its own
			s.mu.Unlock()
			if w != nil {
				snap := w.Snapshot(time.Now())
				s.opts.Logger.Info("progress: "+snap.String(), "work", snap.Name, "done", snap.Done,
					"total", snap.Total, "per_second", snap.PerSecond, "eta_seconds", snap.ETASeconds)
			}
		}
	}
}

// Sample takes one sample now (Run calls it every Interval). A failure to
// read the Indexer's figures skips the sample.
func (s *Status) Sample(ctx context.Context) {
	st, err := s.ix.Stats(ctx)
	if err != nil {
		return
	}
	// A failing repo is in state error between attempts and backfilling
	// during one; the hosts remember it across both.
	hostsFailing := int64(0)
	for _, h := range s.ix.BackfillHosts() {
		hostsFailing += int64(h.Failing)
	}
	s.add(st, hostsFailing, time.Now())
}

// add records a sample of st, whose hosts count hostsFailing failing repos.
func (s *Status) add(st *cistern.Stats, hostsFailing int64, now time.Time) {
	bp := backfillProgressOf(st)
	bp.failing = max(bp.failing, hostsFailing)
	smp := Sample{Time: now.Unix(), LagSeconds: maxBehind(st.Firehose, now), BackfillDone: bp.done,
		BackfillTotal: bp.total, BackfillFailing: bp.failing, DiskBytes: st.DiskBytes, Queued: st.Queued}
	records := st.Backfill.RecordsWritten + st.LiveOps
	events := int64(st.NewestEvent)
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.last; b != nil {
		if dt := now.Sub(b.at).Seconds(); dt > 0 {
			smp.RecordsPerSecond = round1(float64(max(records-b.records, 0)) / dt)
			smp.EventsPerSecond = round1(float64(max(events-b.events, 0)) / dt)
		}
	}
	s.last = &sampleBase{at: now, records: records, events: events}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, smp)
	} else {
		s.ring[s.next] = smp
		s.next = (s.next + 1) % len(s.ring)
	}
	// The backfill as long work: started when repos wait, finished when
	// none does (a filter widening queues every repo again).
	s.track(workBackfill, "repos", bp.done+bp.failing < bp.total || st.Backfill.InFlight > 0, bp.done, bp.total-bp.failing)
	// The backlink index's build (Config.Backlinks), from its saved state.
	bl := st.Backlinks
	s.track(workBacklinks, "records", bl.State == backlinks.StateBuilding, bl.Done, bl.Total)
}

// Names of the long work Status derives from its samples.
const (
	workBackfill  = "backfill"
	workBacklinks = "backlink index build"
)

// track moves the long work name: started when it becomes busy, set to done
// of total while it is, finished when it no longer is. s.mu is held.
func (s *Status) track(name, unit string, busy bool, done, total int64) {
	w := s.works[name]
	switch {
	case busy && w == nil:
		w = s.board.Start(name, unit, total)
		s.works[name] = w
		fallthrough
	case busy:
		w.SetTotal(total)
		w.Set(done)
	case w != nil:
		w.Set(done)
		w.Finish(nil)
		delete(s.works, name)
	}
}

// history returns the samples, oldest first.
func (s *Status) history() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sample, 0, len(s.ring))
	out = append(out, s.ring[s.next:]...)
	return append(out, s.ring[:s.next]...)
}

// progress of the backfill, from the repo states.
type backfillCounts struct{ done, failing, total int64 }

// backfillProgressOf counts the repos done (synced, or in a final state
// such as deactivated), those whose backfill failed and waits for a retry,
// and all of them but the deleted.
func backfillProgressOf(st *cistern.Stats) backfillCounts {
	var c backfillCounts
	for state, n := range st.Repos {
		switch state {
		case "pending", "backfilling", "desynchronized":
		case "error":
			c.failing += n
		case "deleted":
			continue
		default:
			c.done += n
		}
		c.total += n
	}
	return c
}

// behind is how far behind the network a source is: the time since the
// event time of its newest message (cistern_firehose_lag_seconds). It grows
// while the source is stalled, or silent.
func behind(f cistern.FirehoseStats, now time.Time) float64 {
	if f.LastStamped.IsZero() {
		return 0
	}
	return max(now.Sub(f.LastStamped).Seconds(), 0)
}

func maxBehind(fs []cistern.FirehoseStats, now time.Time) float64 {
	m := 0.0
	for _, f := range fs {
		m = max(m, behind(f, now))
	}
	return round1(m)
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func secondsSince(now, t time.Time) float64 {
	if t.IsZero() {
		return -1
	}
	return round1(max(now.Sub(t).Seconds(), 0))
}

// StatusReport is the /status.json document (version StatusVersion). Times
// are RFC 3339; durations are seconds, -1 where not known; rates are per
// second; sizes are bytes.
type StatusReport struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	// Health is "ok" when Problems is empty, "warning" otherwise. Each
	// problem is one sentence for a human.
	Health   string   `json:"health"`
	Problems []string `json:"problems"`
	// UptimeSeconds is the time since the Status was created (the server
	// started).
	UptimeSeconds float64     `json:"uptimeSeconds"`
	Filter        filter.Spec `json:"filter"`
	Store         StoreStatus `json:"store"`
	// Firehose has one entry per source followed.
	Firehose []FirehoseStatus `json:"firehose"`
	Backfill BackfillStatus   `json:"backfill"`
	// Hosts lists the worst PDS hosts (most failing repos first, then
	// paused, then most waiting), at most ?hosts=N (default 25);
	// HostsOmitted counts the others.
	Hosts        []HostStatus `json:"hosts"`
	HostsOmitted int          `json:"hostsOmitted"`
	// Rejected counts the live commits rejected by reason since the store
	// was created; RecentRejects lists the last ones since start.
	Rejected      map[cistern.RejectReason]int64 `json:"rejected"`
	RecentRejects []cistern.RejectedCommit       `json:"recentRejects"`
	// HeldCommits and HeldBytes: live commits held for repos not synced.
	HeldCommits int64 `json:"heldCommits"`
	HeldBytes   int64 `json:"heldBytes"`
	// Consumers lists the durable consumers of the event log.
	Consumers    []ConsumerStatus         `json:"consumers"`
	HandleChecks cistern.HandleCheckStats `json:"handleChecks"`
	// Work lists long work under way, with progress and ETA: the backfill,
	// the backlink index's build, crawls (and crawls that ended within the
	// hour).
	Work []cistern.WorkProgress `json:"work"`
	// Errors lists the last failures (backfills and rejected commits),
	// newest first, at most 20.
	Errors []ErrorStatus `json:"errors"`
	// History is the last hour, one sample every IntervalSeconds.
	History History `json:"history"`
}

// StoreStatus is what the store holds.
type StoreStatus struct {
	Records     int64  `json:"records"`
	Events      int64  `json:"events"`
	NewestEvent uint64 `json:"newestEvent"`
	OldestEvent uint64 `json:"oldestEvent"`
	DiskBytes   int64  `json:"diskBytes"`
	// DiskGrowthBytesPerHour is the growth of DiskBytes over the history
	// (0 with less than a minute of it).
	DiskGrowthBytesPerHour float64 `json:"diskGrowthBytesPerHour"`
}

// FirehoseStatus is one firehose source. Its ages are those of
// cistern_firehose_lag_seconds and cistern_firehose_cursor_age_seconds.
type FirehoseStatus struct {
	Source    string `json:"source"`
	Connected bool   `json:"connected"`
	// BehindSeconds is the time since the event time of the newest message
	// received: how far behind the network ingestion is (it grows while
	// the source is stalled or silent); -1 before the first message.
	BehindSeconds float64 `json:"behindSeconds"`
	// LastMessageAgeSeconds is the time since the last message arrived
	// (-1: none yet).
	LastMessageAgeSeconds float64 `json:"lastMessageAgeSeconds"`
	// Cursor is the saved cursor and CursorAgeSeconds the time since the
	// event time of the message at it: what a restart would replay (-1:
	// not known).
	Cursor           int64   `json:"cursor"`
	CursorAgeSeconds float64 `json:"cursorAgeSeconds"`
	Reconnects       int64   `json:"reconnects"`
	Messages         int64   `json:"messages"`
}

// BackfillStatus is the backfill as a whole.
type BackfillStatus struct {
	// Repos counts repos by state.
	Repos map[string]int64 `json:"repos"`
	// Done, Failing (waiting for a retry) and Total repos (deleted ones
	// aside); Queued repos wait in the queue, InFlight are fetched now.
	Done     int64 `json:"done"`
	Failing  int64 `json:"failing"`
	Total    int64 `json:"total"`
	Queued   int64 `json:"queued"`
	InFlight int   `json:"inFlight"`
	// Counters since start.
	Completed        int64 `json:"completed"`
	Failed           int64 `json:"failed"`
	RateLimited      int64 `json:"rateLimited"`
	HostsRateLimited int   `json:"hostsRateLimited"`
	BytesFetched     int64 `json:"bytesFetched"`
	RecordsWritten   int64 `json:"recordsWritten"`
	// BytesPerSecond is over all hosts, over the last ten seconds or so.
	BytesPerSecond float64 `json:"bytesPerSecond"`
}

// HostStatus is one PDS host's backfill work (backfill.HostStats) with the
// reason it is listed, if it is in trouble.
type HostStatus struct {
	backfill.HostStats
	// Reason says what is wrong: the last error of a failing host, or
	// "rate limited"; "" for a healthy one.
	Reason string `json:"reason"`
}

// ConsumerStatus is one durable consumer of the event log.
type ConsumerStatus struct {
	Name string `json:"name"`
	// Kind is "tap" for tap's delivery targets, "stream" otherwise.
	Kind string `json:"kind"`
	// Acked is its position; LagEvents the events after it.
	Acked     uint64 `json:"acked"`
	LagEvents uint64 `json:"lagEvents"`
	// LagSeconds is the age of the oldest event it has not acknowledged
	// (0 when it is caught up), and LastAckAgeSeconds the time since its
	// position last moved.
	LagSeconds        float64 `json:"lagSeconds"`
	LastAckAgeSeconds float64 `json:"lastAckAgeSeconds"`
	// Stalled: events wait and it has not acknowledged any for
	// StatusOptions.StallAfter (a minute).
	Stalled bool `json:"stalled"`
	// Tap's outbox, for a tap consumer: events read and not acknowledged,
	// in flight, and /channel clients.
	Pending  int   `json:"pending,omitempty"`
	InFlight int   `json:"inFlight,omitempty"`
	Clients  int64 `json:"clients,omitempty"`
}

// ErrorStatus is one recent failure.
type ErrorStatus struct {
	At time.Time `json:"at"`
	// Kind is "backfill" or "commit" (a live commit rejected).
	Kind string `json:"kind"`
	// Repo is the DID ("" when not known), Host its PDS host for a
	// backfill.
	Repo string `json:"repo"`
	Host string `json:"host,omitempty"`
	// Reason is the failure kind or the rejection reason; Message the
	// error.
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// History is the sampled last hour.
type History struct {
	IntervalSeconds float64  `json:"intervalSeconds"`
	Samples         []Sample `json:"samples"`
}

// Sample is the state at one moment.
type Sample struct {
	// Time is in unix seconds.
	Time int64 `json:"t"`
	// RecordsPerSecond counts record changes written (backfill and live)
	// and EventsPerSecond events appended to the log, since the previous
	// sample.
	RecordsPerSecond float64 `json:"recordsPerSecond"`
	EventsPerSecond  float64 `json:"eventsPerSecond"`
	// LagSeconds is the largest BehindSeconds of the firehose sources.
	LagSeconds float64 `json:"lagSeconds"`
	// The backfill's repos done, failing and in all; Queued in the queue.
	BackfillDone    int64 `json:"backfillDone"`
	BackfillFailing int64 `json:"backfillFailing"`
	BackfillTotal   int64 `json:"backfillTotal"`
	Queued          int64 `json:"queued"`
	DiskBytes       int64 `json:"diskBytes"`
}

// Report assembles the status report now, listing at most maxHosts hosts
// (the worst).
func (s *Status) Report(ctx context.Context, maxHosts int) (*StatusReport, error) {
	st, err := s.ix.Stats(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	hist := s.history()
	bp := backfillProgressOf(st)
	r := &StatusReport{
		Version: StatusVersion, Time: now.UTC(), UptimeSeconds: round1(now.Sub(s.started).Seconds()),
		Filter: s.ix.Filter().Spec(),
		Store: StoreStatus{Records: st.Records, Events: st.Events, NewestEvent: st.NewestEvent,
			OldestEvent: st.OldestEvent, DiskBytes: st.DiskBytes, DiskGrowthBytesPerHour: diskGrowth(hist, st.DiskBytes, now)},
		Backfill: BackfillStatus{Repos: st.Repos, Done: bp.done, Failing: bp.failing, Total: bp.total,
			Queued: st.Queued, InFlight: st.Backfill.InFlight, Completed: st.Backfill.Completed,
			Failed: st.Backfill.Failed, RateLimited: st.Backfill.RateLimited,
			HostsRateLimited: st.Backfill.HostsRateLimited, BytesFetched: st.Backfill.BytesFetched,
			RecordsWritten: st.Backfill.RecordsWritten},
		Rejected: st.Rejected, RecentRejects: nonNil(st.RecentRejects),
		HeldCommits: st.HeldCommits, HeldBytes: st.HeldBytes, HandleChecks: st.HandleChecks,
		History:  History{IntervalSeconds: s.opts.Interval.Seconds(), Samples: hist},
		Problems: []string{},
	}
	for _, f := range st.Firehose {
		r.Firehose = append(r.Firehose, FirehoseStatus{Source: f.Source, Connected: f.Connected,
			BehindSeconds: secondsSince(now, f.LastStamped), LastMessageAgeSeconds: secondsSince(now, f.LastReceived),
			Cursor: f.Cursor, CursorAgeSeconds: secondsSince(now, f.CursorStamped), Reconnects: f.Reconnects, Messages: f.Messages})
	}
	r.Firehose = nonNil(r.Firehose)

	hosts := s.ix.BackfillHosts()
	for _, h := range hosts {
		r.Backfill.BytesPerSecond += h.BytesPerSecond
	}
	r.Backfill.BytesPerSecond = round1(r.Backfill.BytesPerSecond)
	r.Hosts, r.HostsOmitted = worstHosts(hosts, maxHosts, now)

	if r.Consumers, err = s.consumers(ctx, st.NewestEvent, now); err != nil {
		return nil, err
	}
	for _, name := range []string{workBackfill, workBacklinks} {
		s.mu.Lock()
		w := s.works[name]
		s.mu.Unlock()
		if w != nil {
			r.Work = append(r.Work, w.Snapshot(now))
		}
	}
	r.Work = nonNil(append(r.Work, st.Work...))
	r.Errors = recentErrors(st)
	r.Problems = problems(r, now)
	r.Health = "ok"
	if len(r.Problems) > 0 {
		r.Health = "warning"
	}
	return r, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// diskGrowth is the growth of the store per hour over the history.
func diskGrowth(hist []Sample, now int64, at time.Time) float64 {
	if len(hist) == 0 {
		return 0
	}
	first := hist[0]
	d := at.Sub(time.Unix(first.Time, 0))
	if d < time.Minute {
		return 0
	}
	return round1(float64(now-first.DiskBytes) / d.Hours())
}

// worstHosts orders the hosts worst first and keeps n of them.
func worstHosts(hosts []backfill.HostStats, n int, now time.Time) ([]HostStatus, int) {
	slices.SortFunc(hosts, func(a, b backfill.HostStats) int {
		if c := cmp.Compare(b.Failing, a.Failing); c != 0 {
			return c
		}
		ap, bp := a.RateLimitedUntil.After(now), b.RateLimitedUntil.After(now)
		if ap != bp {
			if ap {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.Queued, a.Queued); c != 0 {
			return c
		}
		if c := cmp.Compare(b.InFlight, a.InFlight); c != 0 {
			return c
		}
		if c := cmp.Compare(b.BytesPerSecond, a.BytesPerSecond); c != 0 {
			return c
		}
		return cmp.Compare(a.Host, b.Host)
	})
	omitted := 0
	if len(hosts) > n {
		omitted, hosts = len(hosts)-n, hosts[:n]
	}
	out := make([]HostStatus, 0, len(hosts))
	for _, h := range hosts {
		h.BytesPerSecond = round1(h.BytesPerSecond)
		hs := HostStatus{HostStats: h}
		switch {
		case h.Failing > 0 && h.LastError != nil:
			hs.Reason = h.LastError.Kind + ": " + h.LastError.Message
		case h.RateLimitedUntil.After(now):
			hs.Reason = "rate limited until " + h.RateLimitedUntil.UTC().Format(time.RFC3339)
		}
		out = append(out, hs)
	}
	return out, omitted
}

// consumers reads the durable consumers' positions and the age of the
// first event each has not acknowledged.
func (s *Status) consumers(ctx context.Context, newest uint64, now time.Time) ([]ConsumerStatus, error) {
	cs, err := s.ix.Consumers(ctx)
	if err != nil {
		return nil, err
	}
	if len(cs) > maxConsumers {
		cs = cs[:maxConsumers]
	}
	out := make([]ConsumerStatus, 0, len(cs))
	err = s.ix.Store().View(ctx, func(tx store.ReadTx) error {
		for _, c := range cs {
			cst := ConsumerStatus{Name: c.Name, Kind: "stream", Acked: c.Acked,
				LastAckAgeSeconds: secondsSince(now, c.Updated)}
			if c.Name == tapcompat.ChannelConsumer || c.Name == tapcompat.WebhookConsumer {
				cst.Kind = "tap"
			}
			if newest > c.Acked {
				cst.LagEvents = newest - c.Acked
				err := tx.ScanEvents(c.Acked, func(ev *store.Event) (bool, error) {
					cst.LagSeconds = secondsSince(now, ev.Time)
					return false, nil
				})
				if err != nil {
					return err
				}
				cst.Stalled = now.Sub(c.Updated) >= s.opts.StallAfter
			}
			out = append(out, cst)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if tap := s.opts.Tap; tap != nil {
		ts, err := tap.Stats(ctx)
		if err == nil {
			for i := range out {
				if out[i].Name == ts.Name {
					out[i].Pending, out[i].InFlight, out[i].Clients = ts.Pending, ts.InFlight, ts.Clients
				}
			}
		}
	}
	return out, nil
}

// recentErrors merges the last backfill failures and rejected commits.
func recentErrors(st *cistern.Stats) []ErrorStatus {
	out := make([]ErrorStatus, 0, len(st.BackfillFailures)+len(st.RecentRejects))
	for _, f := range st.BackfillFailures {
		out = append(out, ErrorStatus{At: f.At, Kind: "backfill", Repo: f.DID, Host: f.Host, Reason: f.Kind, Message: f.Message})
	}
	for _, r := range st.RecentRejects {
		out = append(out, ErrorStatus{At: r.At, Kind: "commit", Repo: r.DID, Reason: string(r.Reason), Message: r.Message})
	}
	slices.SortStableFunc(out, func(a, b ErrorStatus) int { return b.At.Compare(a.At) })
	if len(out) > maxErrors {
		out = out[:maxErrors]
	}
	return out
}

// problems says in sentences what needs an operator's eye.
func problems(r *StatusReport, now time.Time) []string {
	var p []string
	for _, f := range r.Firehose {
		switch {
		case !f.Connected:
			p = append(p, fmt.Sprintf("firehose %s is not connected (%d reconnects)", f.Source, f.Reconnects))
		case f.BehindSeconds > lagProblem.Seconds():
			p = append(p, fmt.Sprintf("firehose %s is %s behind the network (or silent)", f.Source, seconds(f.BehindSeconds)))
		}
	}
	// A failing repo is in state error between attempts, and backfilling
	// during one; the hosts remember it across both.
	failing, hosts := 0, 0
	for _, h := range r.Hosts {
		if h.Failing > 0 {
			failing += h.Failing
			hosts++
		}
	}
	if n := max(int64(failing), r.Backfill.Failing); n > 0 {
		p = append(p, fmt.Sprintf("%d repo(s) failing backfill (on %d of the hosts listed), retried after a backoff", n, hosts))
	}
	if n := r.Backfill.HostsRateLimited; n > 0 {
		p = append(p, fmt.Sprintf("%d PDS hosts rate limited now", n))
	}
	for _, c := range r.Consumers {
		if c.Stalled {
			p = append(p, fmt.Sprintf("consumer %s is %d events (%s) behind and has not acknowledged for %s",
				c.Name, c.LagEvents, seconds(c.LagSeconds), seconds(c.LastAckAgeSeconds)))
		}
	}
	hourAgo := now.Add(-time.Hour)
	rejected := 0
	for _, rc := range r.RecentRejects {
		if rc.At.After(hourAgo) {
			rejected++
		}
	}
	if rejected > 0 {
		p = append(p, fmt.Sprintf("%d live commits rejected within the hour (see errors)", rejected))
	}
	return nonNil(p)
}

func seconds(s float64) string {
	return (time.Duration(s) * time.Second).String()
}

// serveStatusJSON answers GET /status.json[?hosts=N].
func (s *Server) serveStatusJSON(w http.ResponseWriter, r *http.Request) {
	n := DefaultStatusHosts
	if v := r.URL.Query().Get("hosts"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxStatusHosts {
			writeError(w, http.StatusBadRequest, "InvalidRequest",
				fmt.Sprintf("hosts must be a whole number from 1 to %d, got %q", MaxStatusHosts, truncate(v, 40)))
			return
		}
	}
	rep, err := s.status.Report(r.Context(), n)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, rep)
}

// Status returns the server's status sampler, which serves /status.json
// and /status. Run it (Status().Run(ctx)) for the page's charts.
func (s *Server) Status() *Status { return s.status }

// StatusPage returns the status page's handler (GET /status), for a host
// that serves it at another path too, such as /. The page reads
// status.json relative to its own URL.
func (s *Server) StatusPage() http.Handler { return http.HandlerFunc(serveStatusPage) }
