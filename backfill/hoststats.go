package backfill

import (
	"sync"
	"time"
)

// HostStats is the backfill work of one PDS host, as Scheduler.Hosts
// reports it. Counters are since New.
type HostStats struct {
	// Host is the PDS host (host[:port] of its URL).
	Host string `json:"host"`
	// InFlight counts requests to the host now; Queued counts backfills
	// waiting for one of its request slots (Options.PerHost) or for their
	// turn under Options.HostInterval.
	InFlight int `json:"inFlight"`
	Queued   int `json:"queued"`
	// Failing counts repos whose last attempt failed on this host (not a
	// rate limit) and that wait for their retry.
	Failing int `json:"failing"`
	// RateLimitedUntil is when the host, paused after a 429, accepts
	// requests again; zero when it is not paused.
	RateLimitedUntil time.Time `json:"rateLimitedUntil,omitzero"`
	// Bytes counts the response bytes received from the host, and
	// BytesPerSecond is their rate over the last ten seconds or so.
	Bytes          int64   `json:"bytes"`
	BytesPerSecond float64 `json:"bytesPerSecond"`
	// Completed counts backfills of the host's repos that succeeded,
	// Failures those that failed (and were queued for a retry), and
	// RateLimits those deferred because the host was paused.
	Completed  int64 `json:"completed"`
	Failures   int64 `json:"failures"`
	RateLimits int64 `json:"rateLimits"`
	// LastError is the host's most recent failure, nil if none.
	LastError *Failure `json:"lastError,omitempty"`
}

// Failure is one failed backfill attempt.
type Failure struct {
	// DID is the repo, Host its PDS host ("" when the failure came before
	// the host was known, such as a failed DID resolution).
	DID  string `json:"did"`
	Host string `json:"host,omitempty"`
	// Kind is the failure kind (KindNetwork, KindHTTP, ...), Message the
	// error.
	Kind    string `json:"kind"`
	Message string `json:"message"`
	// At is when the attempt failed, Retry when the repo is tried again.
	At    time.Time `json:"at"`
	Retry time.Time `json:"retry"`
}

// Hosts returns the work of each PDS host seen recently: hosts with
// requests in flight or waiting, paused hosts, hosts with failing repos and
// hosts that answered within the last hour, in no particular order. It
// costs one entry (about 300 bytes) per such host.
func (s *Scheduler) Hosts() []HostStats {
	now := s.opts.Now()
	live := s.hosts.snapshot(now)
	return s.ledger.merge(live, now)
}

// RecentFailures returns the last backfill failures (at most
// maxRecentFailures, 32), newest first. Rate limits are not failures.
func (s *Scheduler) RecentFailures() []Failure { return s.ledger.recentFailures() }

// hostLive is what the request limiter knows of a host now.
type hostLive struct {
	inFlight, queued int
	paused           time.Time
}

// snapshot returns, for each host the limiter holds, its requests in
// flight and waiting and its pause.
func (hs *hosts) snapshot(now time.Time) map[string]hostLive {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	out := make(map[string]hostLive, len(hs.m))
	for name, h := range hs.m {
		busy := len(h.slots)
		l := hostLive{inFlight: busy, queued: max(h.refs-busy, 0)}
		if h.paused.After(now) {
			l.paused = h.paused
		}
		out[name] = l
	}
	return out
}

const (
	// maxRecentFailures bounds RecentFailures.
	maxRecentFailures = 32
	// hostForget is how long a host with nothing failing is remembered
	// after its last activity.
	hostForget = time.Hour
	// rateWindow is the span over which a host's bytes per second are
	// measured.
	rateWindow = 10 * time.Second
)

// ledger counts the work of each host and remembers the repos failing on
// each and the last failures. Its memory: one entry per host active within
// hostForget or with failing repos, one per failing repo (about 100
// bytes), and maxRecentFailures failures.
type ledger struct {
	now func() time.Time

	mu      sync.Mutex
	hosts   map[string]*hostLedger
	failing map[string]string // DID -> host it failed on
	recent  []Failure         // ring, next write at next
	next    int
	pruned  time.Time
}

type hostLedger struct {
	bytes, completed, failures, rateLimits int64
	failing                                int
	last                                   *Failure
	active                                 time.Time
	windowAt                               time.Time // start of the current rate window
	windowBytes                            int64     // bytes in it
	rate                                   float64   // bytes/s over the last full window
}

func newLedger(now func() time.Time) *ledger {
	return &ledger{now: now, hosts: make(map[string]*hostLedger), failing: make(map[string]string)}
}

// host returns the host's entry, creating it; mu is held.
func (l *ledger) host(name string, now time.Time) *hostLedger {
	h := l.hosts[name]
	if h == nil {
		h = &hostLedger{windowAt: now}
		l.hosts[name] = h
		if len(l.hosts) > 1024 && now.Sub(l.pruned) > time.Minute {
			l.pruneLocked(now)
		}
	}
	h.active = now
	return h
}

// received counts n response bytes from host.
func (l *ledger) received(host string, n int64) {
	if host == "" || n <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.host(host, now)
	h.bytes += n
	h.roll(now)
	h.windowBytes += n
}

// roll closes the rate window once it is rateWindow long.
func (h *hostLedger) roll(now time.Time) {
	if d := now.Sub(h.windowAt); d >= rateWindow {
		h.rate = float64(h.windowBytes) / d.Seconds()
		h.windowAt, h.windowBytes = now, 0
	}
}

// bytesPerSecond is the rate of the last full window, or of the current
// one when that has lasted longer (a host that went quiet decays to 0).
func (h *hostLedger) bytesPerSecond(now time.Time) float64 {
	if d := now.Sub(h.windowAt); d >= rateWindow {
		return float64(h.windowBytes) / d.Seconds()
	}
	return h.rate
}

// succeeded records a backfill of did from host that succeeded.
func (l *ledger) succeeded(did, host string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(did)
	if host != "" {
		l.host(host, now).completed++
	}
}

// forget drops did from the failing repos (its backfill ended in an
// outcome, or it is no longer tracked).
func (l *ledger) forget(did string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(did)
}

func (l *ledger) forgetLocked(did string) {
	host, ok := l.failing[did]
	if !ok {
		return
	}
	delete(l.failing, did)
	if h := l.hosts[host]; h != nil && h.failing > 0 {
		h.failing--
	}
}

// failed records a failed attempt.
func (l *ledger) failed(f Failure) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(f.DID)
	if f.Host != "" {
		h := l.host(f.Host, f.At)
		h.failures++
		h.failing++
		last := f
		h.last = &last
		l.failing[f.DID] = f.Host
	}
	if len(l.recent) < maxRecentFailures {
		l.recent = append(l.recent, f)
	} else {
		l.recent[l.next] = f
	}
	l.next = (l.next + 1) % maxRecentFailures
}

// rateLimited records a backfill deferred because host was paused.
func (l *ledger) rateLimited(host string) {
	if host == "" {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.host(host, now).rateLimits++
}

func (l *ledger) recentFailures() []Failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Failure, 0, len(l.recent))
	for i := range l.recent {
		// Newest first: the one before next, going back.
		j := (l.next - 1 - i + 2*maxRecentFailures) % maxRecentFailures
		out = append(out, l.recent[j])
	}
	return out
}

// pruneLocked forgets hosts with nothing failing and no activity within
// hostForget.
func (l *ledger) pruneLocked(now time.Time) {
	l.pruned = now
	for name, h := range l.hosts {
		if h.failing == 0 && now.Sub(h.active) > hostForget {
			delete(l.hosts, name)
		}
	}
}

// merge joins the limiter's view of the hosts with the ledger's.
func (l *ledger) merge(live map[string]hostLive, now time.Time) []HostStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
	out := make([]HostStats, 0, len(l.hosts)+len(live))
	for name, h := range l.hosts {
		hs := HostStats{Host: name, Failing: h.failing, Bytes: h.bytes, BytesPerSecond: h.bytesPerSecond(now),
			Completed: h.completed, Failures: h.failures, RateLimits: h.rateLimits}
		if h.last != nil {
			last := *h.last
			hs.LastError = &last
		}
		if lv, ok := live[name]; ok {
			hs.InFlight, hs.Queued, hs.RateLimitedUntil = lv.inFlight, lv.queued, lv.paused
			delete(live, name)
		}
		out = append(out, hs)
	}
	for name, lv := range live {
		if lv.inFlight == 0 && lv.queued == 0 && lv.paused.IsZero() {
			continue
		}
		out = append(out, HostStats{Host: name, InFlight: lv.inFlight, Queued: lv.queued, RateLimitedUntil: lv.paused})
	}
	return out
}
