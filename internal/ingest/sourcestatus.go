package ingest

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cistern-dev/cistern/verify"
)

// SourceStats is one firehose source as Ingest follows it, for the status
// report. Its ages agree with the metrics (cistern_firehose_lag_seconds is
// now minus LastStamped, cistern_firehose_cursor_age_seconds now minus
// CursorStamped).
type SourceStats struct {
	// Source is the source's URL.
	Source string `json:"source"`
	// Connected reports whether a connection is open now.
	Connected bool `json:"connected"`
	// Messages counts the messages received since the source's follow last
	// started, and Reconnects (since New) the times a connection ended or
	// could not be opened and another was scheduled.
	Messages   int64 `json:"messages"`
	Reconnects int64 `json:"reconnects"`
	// LastSeq is the sequence number of the last message received.
	LastSeq int64 `json:"lastSeq"`
	// LastReceived is when the last message arrived, and LastStamped the
	// event time of the newest message received (zero: none yet).
	LastReceived time.Time `json:"lastReceived,omitzero"`
	LastStamped  time.Time `json:"lastStamped,omitzero"`
	// Cursor is the saved cursor, and CursorStamped the event time of the
	// message at it (zero when not known).
	Cursor        int64     `json:"cursor"`
	CursorStamped time.Time `json:"cursorStamped,omitzero"`
}

// Rejection is one live commit that was not applied (its repo is
// resynced).
type Rejection struct {
	// DID is the repo ("" for a frame too large to read), Rev the commit's
	// rev.
	DID    string              `json:"did"`
	Rev    string              `json:"rev,omitempty"`
	Reason verify.RejectReason `json:"reason"`
	// Message says what was wrong.
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// maxRejections is how many rejections Rejections remembers.
const maxRejections = 16

// recent keeps, for the status report, what the metrics do not: when each
// source's last message arrived and its saved cursor, the record ops
// applied, and the last rejections. It costs one entry per source and
// maxRejections rejections.
type recent struct {
	ops atomic.Int64 // ops of live commits applied

	mu      sync.Mutex
	m       map[string]*seen
	rejects []Rejection // ring; next write at next
	next    int
}

type seen struct {
	received time.Time
	cursor   int64
}

func newRecent() *recent { return &recent{m: make(map[string]*seen)} }

func (r *recent) get(src string) *seen {
	s := r.m[src]
	if s == nil {
		s = &seen{}
		r.m[src] = s
	}
	return s
}

// follow notes that src is followed from the saved cursor.
func (r *recent) follow(src string, cursor int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.get(src).cursor = cursor
}

// received notes that a message of src arrived now.
func (r *recent) received(src string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.get(src).received = now
}

// saved notes that src's cursor was saved at c.
func (r *recent) saved(src string, c int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.get(src).cursor = c
}

// rejected remembers a rejected commit.
func (r *recent) rejected(did, rev string, reason verify.RejectReason, err error) {
	rj := Rejection{DID: did, Rev: rev, Reason: reason, At: time.Now()}
	if err != nil {
		rj.Message = err.Error()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rejects) < maxRejections {
		r.rejects = append(r.rejects, rj)
	} else {
		r.rejects[r.next] = rj
	}
	r.next = (r.next + 1) % maxRejections
}

// Sources returns each firehose source followed since New, by URL.
func (in *Ingest) Sources() []SourceStats {
	ms := in.metrics.sources
	ms.mu.Lock()
	out := make([]SourceStats, 0, len(ms.m))
	for src, e := range ms.m {
		st := e.ended
		connected := false
		if e.client != nil {
			cur := e.client.Stats()
			connected = cur.Connected
			st = addStats(st, cur)
			st.Messages = e.ended.Messages + cur.Messages
			st.LastSeq = cur.LastSeq
		}
		out = append(out, SourceStats{Source: src, Connected: connected, Messages: st.Messages,
			Reconnects: st.Reconnects, LastSeq: st.LastSeq, LastStamped: e.last, CursorStamped: e.cursorAt})
	}
	ms.mu.Unlock()
	r := in.recent
	r.mu.Lock()
	for i := range out {
		if s := r.m[out[i].Source]; s != nil {
			out[i].LastReceived, out[i].Cursor = s.received, s.cursor
		}
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// Rejections returns the last live commits rejected (at most 16), newest
// first.
func (in *Ingest) Rejections() []Rejection {
	r := in.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Rejection, 0, len(r.rejects))
	for i := range r.rejects {
		out = append(out, r.rejects[(r.next-1-i+2*maxRejections)%maxRejections])
	}
	return out
}

// LiveOps counts the record ops of live commits applied since New.
func (in *Ingest) LiveOps() int64 { return in.recent.ops.Load() }
