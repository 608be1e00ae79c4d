package firehose

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/coder/websocket"
)

const aliceDID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

// testClient returns a client for h whose backoff sleeps are recorded and
// skipped.
func testClient(t *testing.T, h *fakeHost, opts Options) (*Client, *noSleep) {
	t.Helper()
	opts.URL = h.srv.URL
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := &noSleep{}
	s.install(c)
	return c, s
}

// collector is a handler that records sequence numbers and cancels the run
// once it has seen until.
type collector struct {
	mu     sync.Mutex
	seqs   []int64
	kinds  []string
	until  int64
	cancel context.CancelFunc
}

func (col *collector) handle(ctx context.Context, m *Message) error {
	col.mu.Lock()
	defer col.mu.Unlock()
	col.seqs = append(col.seqs, m.Seq)
	col.kinds = append(col.kinds, m.Kind)
	if m.Seq >= col.until && col.cancel != nil {
		col.cancel()
	}
	return nil
}

func (col *collector) got() []int64 {
	col.mu.Lock()
	defer col.mu.Unlock()
	return slices.Clone(col.seqs)
}

func seqRange(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// holdOpen keeps a server connection open until the client goes away.
func holdOpen(ctx context.Context, c *websocket.Conn) {
	c.CloseRead(ctx)
	<-ctx.Done()
}

func TestNew_URL(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "https://bsky.network", want: "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos"},
		{in: "http://127.0.0.1:2470/", want: "ws://127.0.0.1:2470/xrpc/com.atproto.sync.subscribeRepos"},
		{in: "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos", want: "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos"},
		{in: "ws://h/prefix/", want: "ws://h/prefix/xrpc/com.atproto.sync.subscribeRepos"},
		{in: "", bad: true},
		{in: "ftp://h", bad: true},
		{in: "https://", bad: true},
		{in: "://x", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := New(Options{URL: tt.in})
			if tt.bad {
				if err == nil {
					t.Fatalf("New(%q) accepted, URL %s", tt.in, c.URL())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.URL() != tt.want {
				t.Errorf("URL = %s, want %s", c.URL(), tt.want)
			}
		})
	}
}

func TestClient_CursorOnConnect(t *testing.T) {
	tests := []struct {
		name       string
		cursor     int64
		wantCursor string
	}{
		{"live", 0, ""},
		{"resume", 41, "41"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
				// The host sends what follows the cursor (or 100.. live).
				from := max(cursor, 99) + 1
				send(ctx, c, commitFrame(from, aliceDID), commitFrame(from+1, aliceDID))
				holdOpen(ctx, c)
			})
			c, _ := testClient(t, h, Options{})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			col := &collector{until: max(tt.cursor, 99) + 2, cancel: cancel}
			handle := func(ctx context.Context, m *Message) error {
				if !c.Stats().Connected {
					t.Errorf("stats do not say connected while a message is handled")
				}
				return col.handle(ctx, m)
			}
			if err := c.Run(ctx, tt.cursor, handle); !errors.Is(err, context.Canceled) {
				t.Fatalf("Run = %v, want context.Canceled", err)
			}
			if got := h.Cursors(); !slices.Equal(got, []string{tt.wantCursor}) {
				t.Errorf("cursors = %q, want [%q]", got, tt.wantCursor)
			}
			if want := seqRange(max(tt.cursor, 99)+1, max(tt.cursor, 99)+2); !slices.Equal(col.got(), want) {
				t.Errorf("handled %v, want %v", col.got(), want)
			}
		})
	}
}

func TestClient_ReconnectResumesWithoutGapOrRepeat(t *testing.T) {
	const total = 30
	stream := make(map[int64][]byte)
	for s := int64(1); s <= total; s++ {
		stream[s] = commitFrame(s, fmt.Sprintf("did:plc:repo%d", s%4))
	}
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		switch n {
		case 0: // 1..10, then the connection drops
			for s := int64(1); s <= 10; s++ {
				send(ctx, c, stream[s])
			}
		case 1: // a sloppy host replays three old messages, then 11..20, then drops
			for s := cursor - 2; s <= 20; s++ {
				send(ctx, c, stream[s])
			}
		default:
			for s := cursor + 1; s <= total; s++ {
				send(ctx, c, stream[s])
			}
			holdOpen(ctx, c)
		}
	})
	c, sleeps := testClient(t, h, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	col := &collector{until: total, cancel: cancel}
	if err := c.Run(ctx, 0, col.handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if want := seqRange(1, total); !slices.Equal(col.got(), want) {
		t.Errorf("handled %v, want %v", col.got(), want)
	}
	if got, want := h.Cursors(), []string{"", "10", "20"}; !slices.Equal(got, want) {
		t.Errorf("cursors = %q, want %q", got, want)
	}
	st := c.Stats()
	if st.Duplicates != 3 || st.Messages != total || st.LastSeq != total || st.Connections != 3 || st.Reconnects != 2 {
		t.Errorf("stats = %+v, want 3 duplicates, %d messages, 3 connections, 2 reconnects", st, total)
	}
	if st.Connected {
		t.Errorf("stats say connected after Run returned")
	}
	if n := len(sleeps.durations()); n != 2 {
		t.Errorf("%d backoff sleeps, want 2", n)
	}
}

func TestClient_FutureCursorStops(t *testing.T) {
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		send(ctx, c, errFrame(NameFutureCursor, "Cursor in the future."))
		holdOpen(ctx, c)
	})
	c, _ := testClient(t, h, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := c.Run(ctx, 1000, func(context.Context, *Message) error { return nil })
	if !errors.Is(err, ErrFutureCursor) {
		t.Fatalf("Run = %v, want ErrFutureCursor", err)
	}
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Message != "Cursor in the future." {
		t.Errorf("err = %#v, want the upstream message", err)
	}
	if n := len(h.Cursors()); n != 1 {
		t.Errorf("%d connections, want 1 (no reconnect)", n)
	}
}

func TestClient_OtherErrorFrameReconnects(t *testing.T) {
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		if n == 0 {
			send(ctx, c, commitFrame(1, aliceDID), commitFrame(2, aliceDID), errFrame(NameConsumerTooSlow, ""))
			holdOpen(ctx, c) // the client, not the host, closes
			return
		}
		send(ctx, c, commitFrame(cursor+1, aliceDID))
		holdOpen(ctx, c)
	})
	c, _ := testClient(t, h, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	col := &collector{until: 3, cancel: cancel}
	if err := c.Run(ctx, 0, col.handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if want := seqRange(1, 3); !slices.Equal(col.got(), want) {
		t.Errorf("handled %v, want %v", col.got(), want)
	}
	if got, want := h.Cursors(), []string{"", "2"}; !slices.Equal(got, want) {
		t.Errorf("cursors = %q, want %q", got, want)
	}
	if st := c.Stats(); st.ErrorFrames != 1 {
		t.Errorf("ErrorFrames = %d, want 1", st.ErrorFrames)
	}
}

func TestClient_FrameSizeLimit(t *testing.T) {
	big := msgFrame(KindCommit, testCommit(2, aliceDID, 4096))
	limit := int64(len(big) - 1)
	atLimit := msgFrame(KindCommit, testCommit(1, aliceDID, 4095))
	if int64(len(atLimit)) != limit {
		t.Fatalf("frame sizes %d and %d, want %d and %d", len(atLimit), len(big), limit, limit+1)
	}
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		send(ctx, c, atLimit, big)
		holdOpen(ctx, c)
	})
	c, _ := testClient(t, h, Options{MaxFrameSize: limit})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	col := &collector{}
	err := c.Run(ctx, 0, col.handle)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Run = %v, want ErrFrameTooLarge", err)
	}
	if !slices.Equal(col.got(), []int64{1}) {
		t.Errorf("handled %v, want [1] (the frame at the limit)", col.got())
	}
	if n := len(h.Cursors()); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestClient_SkipsMalformedAndUnknownFrames(t *testing.T) {
	good := commitFrame(2, aliceDID)
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		send(ctx, c,
			commitFrame(1, aliceDID),
			[]byte{0xff, 0xfe}, // garbage
			good[:len(good)-5], // truncated
			append(encodeHeader(1, "#labels"), marshalBody(&comatproto.SyncSubscribeRepos_Info{Name: "x"})...),
			good,
		)
		c.Write(ctx, websocket.MessageText, []byte("hello"))
		send(ctx, c, commitFrame(3, aliceDID))
		holdOpen(ctx, c)
	})
	c, _ := testClient(t, h, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	col := &collector{until: 3, cancel: cancel}
	if err := c.Run(ctx, 0, col.handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if want := seqRange(1, 3); !slices.Equal(col.got(), want) {
		t.Errorf("handled %v, want %v", col.got(), want)
	}
	if st := c.Stats(); st.Malformed != 3 || st.Unknown != 1 {
		t.Errorf("stats = %+v, want 3 malformed and 1 unknown", st)
	}
	if n := len(h.Cursors()); n != 1 {
		t.Errorf("%d connections, want 1 (skipping does not reconnect)", n)
	}
}

func TestClient_OutdatedCursorInfo(t *testing.T) {
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		send(ctx, c,
			msgFrame(KindInfo, &comatproto.SyncSubscribeRepos_Info{Name: NameOutdatedCursor, Message: ptr("Requested cursor exceeded limit. Possibly missing events")}),
			commitFrame(500, aliceDID))
		holdOpen(ctx, c)
	})
	var infos []string
	c, _ := testClient(t, h, Options{OnInfo: func(in *comatproto.SyncSubscribeRepos_Info) {
		infos = append(infos, in.Name) // called from Run's goroutine
	}})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	col := &collector{until: 500, cancel: cancel}
	if err := c.Run(ctx, 5, col.handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if !slices.Equal(infos, []string{NameOutdatedCursor}) {
		t.Errorf("OnInfo saw %q", infos)
	}
	if !slices.Equal(col.kinds, []string{KindInfo, KindCommit}) {
		t.Errorf("handler saw %q, want the info then the commit", col.kinds)
	}
}

func TestClient_HandlerErrorStopsRun(t *testing.T) {
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		for s := int64(1); s <= 5; s++ {
			send(ctx, c, commitFrame(s, aliceDID))
		}
		holdOpen(ctx, c)
	})
	c, _ := testClient(t, h, Options{})
	errBoom := errors.New("boom")
	var calls atomic.Int64
	err := c.Run(t.Context(), 0, func(_ context.Context, m *Message) error {
		calls.Add(1)
		if m.Seq == 3 {
			return errBoom
		}
		return nil
	})
	if err != errBoom {
		t.Fatalf("Run = %v, want the handler's error as is", err)
	}
	if calls.Load() != 3 {
		t.Errorf("handler called %d times, want 3", calls.Load())
	}
	if st := c.Stats(); st.LastSeq != 2 || st.Messages != 2 {
		t.Errorf("stats = %+v, want LastSeq 2", st)
	}
}

func TestClient_RejectsBadCalls(t *testing.T) {
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) { holdOpen(ctx, c) })
	c, _ := testClient(t, h, Options{})
	nop := func(context.Context, *Message) error { return nil }
	if err := c.Run(t.Context(), -1, nop); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("Run(-1) = %v, want ErrInvalidCursor", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx, 0, nop) }()
	for len(h.Cursors()) == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Run(t.Context(), 0, nop); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestClient_IdleTimeoutReconnects(t *testing.T) {
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		if n == 0 {
			send(ctx, c, commitFrame(1, aliceDID))
			holdOpen(ctx, c) // then silence
			return
		}
		send(ctx, c, commitFrame(cursor+1, aliceDID))
		holdOpen(ctx, c)
	})
	c, _ := testClient(t, h, Options{IdleTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	col := &collector{until: 2, cancel: cancel}
	if err := c.Run(ctx, 0, col.handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if got, want := h.Cursors(), []string{"", "1"}; !slices.Equal(got, want) {
		t.Errorf("cursors = %q, want %q", got, want)
	}
}

func TestClient_BackoffGrowsAndResetsAfterDelivery(t *testing.T) {
	// Connections 0-2 drop at once, 3 delivers one message and drops, the
	// rest drop at once again.
	var conns atomic.Int64
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		conns.Add(1)
		if n == 3 {
			send(ctx, c, commitFrame(1, aliceDID))
		}
	})
	c, err := New(Options{URL: h.srv.URL, MinBackoff: time.Second, MaxBackoff: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.rnd = func(n int64) int64 { return n - 1 } // the top of every jitter range
	var sleeps []time.Duration
	ctx, cancel := context.WithCancel(t.Context())
	c.sleep = func(ctx context.Context, d time.Duration) error {
		sleeps = append(sleeps, d)
		if len(sleeps) == 7 {
			cancel()
		}
		return ctx.Err()
	}
	if err := c.Run(ctx, 0, func(context.Context, *Message) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if st := c.Stats(); st.Reconnects != 7 || st.Connections != conns.Load() {
		t.Errorf("stats = %+v, want 7 reconnects and %d connections", st, conns.Load())
	}
	s := time.Second
	want := []time.Duration{s, 2 * s, 4 * s, s, 2 * s, 4 * s, 5 * s}
	if !slices.Equal(sleeps, want) {
		t.Errorf("sleeps = %v, want %v", sleeps, want)
	}
}

func TestBackoff_Bounds(t *testing.T) {
	minD, maxD := time.Second, time.Minute
	tests := []struct {
		attempt int
		d       time.Duration // the cap of the range [d/2, d]
	}{
		{0, time.Second},
		{1, 2 * time.Second},
		{2, 4 * time.Second},
		{5, 32 * time.Second},
		{6, time.Minute},
		{60, time.Minute},
		{1000, time.Minute},
	}
	for _, tt := range tests {
		low := backoff(tt.attempt, minD, maxD, func(int64) int64 { return 0 })
		high := backoff(tt.attempt, minD, maxD, func(n int64) int64 { return n - 1 })
		if low != tt.d-tt.d/2 || high != tt.d {
			t.Errorf("attempt %d: range [%v, %v], want [%v, %v]", tt.attempt, low, high, tt.d/2, tt.d)
		}
		for range 100 {
			got := backoff(tt.attempt, minD, maxD, rand.Int64N)
			if got < tt.d/2 || got > tt.d {
				t.Fatalf("attempt %d: %v outside [%v, %v]", tt.attempt, got, tt.d/2, tt.d)
			}
		}
	}
}

// TestClient_WithDispatcher runs the Client into a Dispatcher across a
// dropped connection: every message is handled once, in order per repo, and
// the watermark ends at the last sequence number.
func TestClient_WithDispatcher(t *testing.T) {
	const total = 200
	h := newFakeHost(t, func(ctx context.Context, c *websocket.Conn, n int, cursor int64) {
		end := int64(total)
		if n == 0 {
			end = total / 2 // then drop
		}
		for s := cursor + 1; s <= end; s++ {
			if err := send(ctx, c, commitFrame(s, fmt.Sprintf("did:plc:repo%d", s%7))); err != nil {
				return
			}
		}
		if n > 0 {
			holdOpen(ctx, c)
		}
	})
	c, _ := testClient(t, h, Options{})

	var mu sync.Mutex
	perRepo := map[string][]int64{}
	d := NewDispatcher(3, 4, func(ctx context.Context, m *Message) error {
		time.Sleep(time.Duration(m.Seq%3) * 100 * time.Microsecond)
		mu.Lock()
		perRepo[m.DID] = append(perRepo[m.DID], m.Seq)
		mu.Unlock()
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	go d.Run(ctx)

	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx, 0, d.Dispatch) }()
	for d.Watermark() < total {
		if ctx.Err() != nil {
			t.Fatalf("watermark stuck at %d", d.Watermark())
		}
		time.Sleep(time.Millisecond)
	}
	stopRun()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	n := 0
	for did, seqs := range perRepo {
		n += len(seqs)
		if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
			t.Errorf("%s: %v", did, seqs)
		}
	}
	if n != total {
		t.Errorf("handled %d messages, want %d", n, total)
	}
	if got, want := h.Cursors(), []string{"", fmt.Sprint(total / 2)}; !slices.Equal(got, want) {
		t.Errorf("cursors = %q, want %q", got, want)
	}
}
