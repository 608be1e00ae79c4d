package backfill

import (
	"context"
	"sync"
	"time"
)

// hosts limits the requests made to each PDS host: at most perHost at once,
// starts spaced by interval, and none while the host is paused after a 429.
// A host's entry is dropped when it is idle and not paused, so the map does
// not grow with the number of hosts ever seen.
type hosts struct {
	perHost  int
	interval time.Duration
	now      func() time.Time

	mu sync.Mutex
	m  map[string]*host
}

type host struct {
	slots  chan struct{}
	refs   int       // acquirers holding or waiting for a slot
	next   time.Time // earliest start of the next request
	paused time.Time // no request before this time
}

func newHosts(perHost int, interval time.Duration, now func() time.Time) *hosts {
	return &hosts{perHost: perHost, interval: interval, now: now, m: make(map[string]*host)}
}

func (hs *hosts) get(name string) *host {
	h := hs.m[name]
	if h == nil {
		h = &host{slots: make(chan struct{}, hs.perHost)}
		hs.m[name] = h
	}
	return h
}

// pausedUntil returns when the host accepts requests again, or the zero
// time if it is not paused.
func (hs *hosts) pausedUntil(name string) time.Time {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h := hs.m[name]; h != nil && h.paused.After(hs.now()) {
		return h.paused
	}
	return time.Time{}
}

// pause stops requests to the host until t (a later pause wins).
func (hs *hosts) pause(name string, t time.Time) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.get(name)
	if t.After(h.paused) {
		h.paused = t
	}
}

// acquire takes a request slot of the host, waiting for a free slot and
// for its turn under the pacing interval. If the host is paused, it returns
// a rate-limit failure without waiting. release must be called once the
// request is done.
func (hs *hosts) acquire(ctx context.Context, name string) (release func(), err error) {
	hs.mu.Lock()
	h := hs.get(name)
	if until := h.paused; until.After(hs.now()) {
		hs.mu.Unlock()
		return nil, &failure{kind: KindRateLimited, err: ErrRateLimited, until: until}
	}
	h.refs++
	hs.mu.Unlock()

	done := func() {
		hs.mu.Lock()
		h.refs--
		if h.refs == 0 && !h.paused.After(hs.now()) && !h.next.After(hs.now()) {
			delete(hs.m, name)
		}
		hs.mu.Unlock()
	}

	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
	release = func() {
		<-h.slots
		done()
	}

	// Pacing: reserve the next start time, then wait for it.
	hs.mu.Lock()
	now := hs.now()
	start := now
	if h.next.After(start) {
		start = h.next
	}
	h.next = start.Add(hs.interval)
	hs.mu.Unlock()
	if wait := start.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			release()
			return nil, ctx.Err()
		}
	}

	// A 429 may have arrived while we waited.
	hs.mu.Lock()
	until := h.paused
	hs.mu.Unlock()
	if until.After(hs.now()) {
		release()
		return nil, &failure{kind: KindRateLimited, err: ErrRateLimited, until: until}
	}
	return release, nil
}

// limited returns how many hosts are paused now, and forgets idle hosts
// whose pause has ended.
func (hs *hosts) limited() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	now := hs.now()
	n := 0
	for name, h := range hs.m {
		switch {
		case h.paused.After(now):
			n++
		case h.refs == 0 && !h.next.After(now):
			delete(hs.m, name) // idle, and its pause is over
		}
	}
	return n
}

// hostMemo remembers, for a while, that a host lacks something (getBlocks).
// Entries expire after ttl and are pruned when the memo is written, so it
// holds at most the hosts marked within one ttl.
type hostMemo struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[string]time.Time // host → when the mark expires
}

func newHostMemo(ttl time.Duration, now func() time.Time) *hostMemo {
	return &hostMemo{ttl: ttl, now: now, m: make(map[string]time.Time)}
}

// mark records the host for ttl from now.
func (hm *hostMemo) mark(name string) {
	hm.mu.Lock()
	defer hm.mu.Unlock()
	now := hm.now()
	for n, until := range hm.m {
		if !until.After(now) {
			delete(hm.m, n)
		}
	}
	hm.m[name] = now.Add(hm.ttl)
}

// marked reports whether the host was marked less than ttl ago.
func (hm *hostMemo) marked(name string) bool {
	hm.mu.Lock()
	defer hm.mu.Unlock()
	until, ok := hm.m[name]
	return ok && until.After(hm.now())
}
