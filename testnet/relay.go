package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/coder/websocket"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// DefaultRetention is the number of frames the relay keeps for cursor
// replay when Options.Retention is zero.
const DefaultRetention = 1 << 17

// Relay is the network's single relay. It sequences every event of every
// host into one firehose (com.atproto.sync.subscribeRepos), keeps the last
// Options.Retention frames for cursor replay, and serves listRepos and
// listReposByCollection over all hosts.
type Relay struct {
	net      *Network
	counters counters

	mu     sync.Mutex
	ring   [][]byte
	last   int64 // last sequence number assigned; 0 before the first frame
	notify chan struct{}
	conns  map[*relayConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type relayConn struct {
	cancel context.CancelFunc
	info   chan []byte
}

func newRelay(n *Network, retention int) *Relay {
	return &Relay{
		net:    n,
		ring:   make([][]byte, retention),
		notify: make(chan struct{}),
		conns:  make(map[*relayConn]struct{}),
	}
}

// Seq returns the sequence number of the last frame emitted, 0 if none.
func (r *Relay) Seq() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Oldest returns the oldest sequence number still available for replay, or
// 0 if nothing was emitted yet.
func (r *Relay) Oldest() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.oldestLocked()
}

func (r *Relay) oldestLocked() int64 {
	if r.last == 0 {
		return 0
	}
	return max(1, r.last-int64(len(r.ring))+1)
}

// Frame returns the raw frame with sequence number seq (header and body
// back to back), if still retained.
func (r *Relay) Frame(seq int64) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq < r.oldestLocked() || seq > r.last || seq <= 0 {
		return nil, false
	}
	return r.ring[seq%int64(len(r.ring))], true
}

// Connections returns the number of open subscribeRepos connections.
func (r *Relay) Connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// DropConnections closes every open subscribeRepos connection now, without
// a close handshake, as a relay restart or network failure would.
func (r *Relay) DropConnections() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.cancel()
	}
}

// EmitInfo sends an #info frame {name, message} to every open connection.
// Info frames have no sequence number and are not replayed.
func (r *Relay) EmitInfo(name, message string) error {
	msg := &comatproto.SyncSubscribeRepos_Info{Name: name, Message: &message}
	frame, err := encodeFrame("#info", msg)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		select {
		case c.info <- frame:
		default:
		}
	}
	return nil
}

// Requests returns how many requests the relay received for the XRPC
// method nsid (for example "com.atproto.sync.listRepos").
func (r *Relay) Requests(nsid string) int64 { return r.counters.get(nsid) }

func encodeFrame(typ string, m cbg.CBORMarshaler) ([]byte, error) {
	buf := bytes.NewBuffer(frameHeader(typ))
	if err := m.MarshalCBOR(buf); err != nil {
		return nil, fmt.Errorf("testnet: encode %s frame: %w", typ, err)
	}
	return buf.Bytes(), nil
}

// emit assigns the next sequence number (through setSeq), encodes the frame
// and publishes it.
func (r *Relay) emit(typ string, setSeq func(int64), m cbg.CBORMarshaler) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq := r.last + 1
	setSeq(seq)
	frame, err := encodeFrame(typ, m)
	if err != nil {
		return 0, err
	}
	r.ring[seq%int64(len(r.ring))] = frame
	r.last = seq
	close(r.notify)
	r.notify = make(chan struct{})
	return seq, nil
}

func (r *Relay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.cancel()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// handler returns the relay's XRPC routes.
func (r *Relay) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /xrpc/com.atproto.sync.subscribeRepos", r.serveSubscribe)
	mux.HandleFunc("GET /xrpc/com.atproto.sync.listRepos", func(w http.ResponseWriter, req *http.Request) {
		r.counters.add("com.atproto.sync.listRepos")
		r.net.serveListRepos(w, req, nil)
	})
	mux.HandleFunc("GET /xrpc/com.atproto.sync.listReposByCollection", r.serveListReposByCollection)
	return mux
}

func (r *Relay) serveSubscribe(w http.ResponseWriter, req *http.Request) {
	r.counters.add("com.atproto.sync.subscribeRepos")
	var cursor int64 = -1
	if s := req.URL.Query().Get("cursor"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "cursor must be a non-negative integer")
			return
		}
		cursor = v
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		http.Error(w, "relay closed", http.StatusServiceUnavailable)
		return
	}
	r.wg.Add(1)
	// Snapshot the sequence before the handshake completes: a client whose
	// Dial has returned must see every frame sequenced after it, so "live
	// only" starts no later than the upgrade.
	last, oldest := r.last, r.oldestLocked()
	r.mu.Unlock()
	defer r.wg.Done()

	ws, err := websocket.Accept(w, req, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := &relayConn{cancel: cancel, info: make(chan []byte, 16)}
	ctx = ws.CloseRead(ctx)

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.conns[conn] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, conn)
		r.mu.Unlock()
	}()

	next := last + 1
	if cursor >= 0 {
		switch {
		case cursor > last:
			_ = ws.Write(ctx, websocket.MessageBinary, errorFrame("FutureCursor", "cursor is ahead of the current sequence"))
			ws.Close(websocket.StatusNormalClosure, "FutureCursor")
			return
		case oldest > 0 && cursor < oldest-1:
			msg := "cursor is older than the oldest retained event; continuing from " + strconv.FormatInt(oldest, 10)
			frame, err := encodeFrame("#info", &comatproto.SyncSubscribeRepos_Info{Name: "OutdatedCursor", Message: &msg})
			if err != nil || ws.Write(ctx, websocket.MessageBinary, frame) != nil {
				return
			}
			next = oldest
		default:
			next = cursor + 1
		}
	}

	batch := make([][]byte, 0, 256)
	for {
		batch = batch[:0]
		r.mu.Lock()
		if next < r.oldestLocked() {
			r.mu.Unlock()
			_ = ws.Write(ctx, websocket.MessageBinary, errorFrame("ConsumerTooSlow", "subscriber fell behind the relay's retention"))
			ws.Close(websocket.StatusPolicyViolation, "ConsumerTooSlow")
			return
		}
		for ; next <= r.last && len(batch) < cap(batch); next++ {
			batch = append(batch, r.ring[next%int64(len(r.ring))])
		}
		notify := r.notify
		r.mu.Unlock()

		for _, f := range batch {
			if err := writeFrame(ctx, ws, f); err != nil {
				return
			}
		}
		select {
		case f := <-conn.info:
			if err := writeFrame(ctx, ws, f); err != nil {
				return
			}
		default:
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-notify:
		case f := <-conn.info:
			if err := writeFrame(ctx, ws, f); err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

func writeFrame(ctx context.Context, ws *websocket.Conn, f []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := ws.Write(ctx, websocket.MessageBinary, f)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return err
}

func (r *Relay) serveListReposByCollection(w http.ResponseWriter, req *http.Request) {
	r.counters.add("com.atproto.sync.listReposByCollection")
	q := req.URL.Query()
	coll := q.Get("collection")
	if coll == "" {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "collection is required")
		return
	}
	limit, ok := parseLimit(w, q.Get("limit"), 500, 1, 2000)
	if !ok {
		return
	}
	type repoRef struct {
		DID string `json:"did"`
	}
	out := struct {
		Repos  []repoRef `json:"repos"`
		Cursor string    `json:"cursor,omitempty"`
	}{Repos: []repoRef{}}
	for _, a := range r.net.accountsAfter(q.Get("cursor")) {
		a.mu.Lock()
		has := a.status != StatusDeleted && a.collections[coll] > 0
		a.mu.Unlock()
		if !has {
			continue
		}
		out.Repos = append(out.Repos, repoRef{DID: a.did.String()})
		if len(out.Repos) == limit {
			out.Cursor = a.did.String()
			break
		}
	}
	writeJSON(w, out)
}
