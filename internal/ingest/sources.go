package ingest

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/firehose"
	"github.com/cistern-dev/cistern/verify"
)

// SourceStats is one firehose source as Ingest follows it.
type SourceStats struct {
	// Source is the source's URL.
	Source string
	// Messages counts the messages received since the source was first
	// followed, and Reconnects the connections after the first.
	Messages   int64
	Reconnects int64
	// LastSeq is the sequence number of the last message received.
	LastSeq int64
	// LastReceived is when the last message arrived, and LastStamped the
	// time that message carries (zero when it carries none): their
	// difference is how far behind the network the source was then.
	LastReceived time.Time
	LastStamped  time.Time
	// Cursor is the saved cursor, and CursorMoved when it last moved (the
	// start of the follow when it has not moved since).
	Cursor      int64
	CursorMoved time.Time
}

// Rejection is one live commit that was not applied.
type Rejection struct {
	// DID is the repo ("" for a frame too large to read), Rev the commit's
	// rev.
	DID    string
	Rev    string
	Reason verify.RejectReason
	// Message says what was wrong.
	Message string
	At      time.Time
}

// maxRejections is how many rejections Rejections remembers.
const maxRejections = 16

// sources holds, for Stats, what each followed source did and the last
// rejections. It costs one entry per source and maxRejections rejections.
type sources struct {
	ops atomic.Int64 // ops of live commits applied

	mu      sync.Mutex
	m       map[string]*source
	rejects []Rejection // ring; next write at next
	next    int
}

type source struct {
	client *firehose.Client
	stats  SourceStats
	// base holds the counts of the source's clients before the current
	// one (a restart from live makes a new client).
	baseMessages, baseConnections int64
}

func newSources() *sources { return &sources{m: make(map[string]*source)} }

// follow registers the client following src, whose saved cursor is cursor.
func (ss *sources) follow(src string, c *firehose.Client, cursor int64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[src]
	if s == nil {
		s = &source{stats: SourceStats{Source: src}}
		ss.m[src] = s
	}
	if s.client != nil {
		st := s.client.Stats()
		s.baseMessages += st.Messages
		s.baseConnections += st.Connections
	}
	s.client = c
	s.stats.Cursor, s.stats.CursorMoved = cursor, time.Now()
}

// received notes a message of src.
func (ss *sources) received(src string, m *firehose.Message) {
	var ts string
	switch {
	case m.Commit != nil:
		ts = m.Commit.Time
	case m.Identity != nil:
		ts = m.Identity.Time
	case m.Account != nil:
		ts = m.Account.Time
	case m.Sync != nil:
		ts = m.Sync.Time
	}
	var stamped time.Time
	if t, err := syntax.ParseDatetimeLenient(ts); err == nil {
		stamped = t.Time()
	}
	now := time.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s := ss.m[src]; s != nil {
		s.stats.LastReceived = now
		if !stamped.IsZero() {
			s.stats.LastStamped = stamped
		}
	}
}

// saved notes that src's cursor was saved at c.
func (ss *sources) saved(src string, c int64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s := ss.m[src]; s != nil && c != s.stats.Cursor {
		s.stats.Cursor, s.stats.CursorMoved = c, time.Now()
	}
}

// rejected remembers a rejected commit.
func (ss *sources) rejected(did, rev string, reason verify.RejectReason, err error) {
	r := Rejection{DID: did, Rev: rev, Reason: reason, At: time.Now()}
	if err != nil {
		r.Message = err.Error()
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.rejects) < maxRejections {
		ss.rejects = append(ss.rejects, r)
	} else {
		ss.rejects[ss.next] = r
	}
	ss.next = (ss.next + 1) % maxRejections
}

// Sources returns each firehose source followed since New, by URL.
func (in *Ingest) Sources() []SourceStats {
	ss := in.sources
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]SourceStats, 0, len(ss.m))
	for _, s := range ss.m {
		st := s.stats
		cs := s.client.Stats()
		st.Messages = s.baseMessages + cs.Messages
		st.Reconnects = max(s.baseConnections+cs.Connections-1, 0)
		st.LastSeq = cs.LastSeq
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// Rejections returns the last live commits rejected (at most 16), newest
// first.
func (in *Ingest) Rejections() []Rejection {
	ss := in.sources
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]Rejection, 0, len(ss.rejects))
	for i := range ss.rejects {
		out = append(out, ss.rejects[(ss.next-1-i+2*maxRejections)%maxRejections])
	}
	return out
}

// LiveOps counts the record ops of live commits applied since New.
func (in *Ingest) LiveOps() int64 { return in.sources.ops.Load() }
