package jetstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/jetstream"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

// fixture is an event log (store, writer, stream.Log) served by a
// jetstream.Handler at /subscribe and cistern's /stream beside it.
type fixture struct {
	st  *boltstore.DB
	log *stream.Log
	w   *writer.Writer
	h   *jetstream.Handler
	srv *httptest.Server
	n   int // events written so far, for unique values
}

// newFixture starts a fixture; sndBuf, when given, is the send buffer of
// the server's connections (SO_SNDBUF), to make a slow reader felt sooner.
func newFixture(t testing.TB, opts jetstream.Options, logOpts stream.Options, sndBuf ...int) *fixture {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "c.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st}
	f.log = stream.New(st, logOpts)
	f.w = writer.New(st, writer.Options{OnCommit: f.log.Notify})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.w.Run(ctx); close(done) }()
	f.h = jetstream.New(f.log, st, opts)
	mux := http.NewServeMux()
	mux.Handle("GET /subscribe", f.h)
	mux.Handle("GET /stream", httpapi.StreamHandler(f.log, httpapi.StreamOptions{}))
	f.srv = httptest.NewUnstartedServer(mux)
	if len(sndBuf) > 0 {
		f.srv.Listener = bufListener{f.srv.Listener, sndBuf[0]}
	}
	f.srv.Start()
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.log.Close()
		cancel()
		<-done
		st.Close()
	})
	return f
}

var encMode = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// value returns a DAG-CBOR record of collection and its CID.
func value(collection, text string) (v, c []byte) {
	v, err := encMode.Marshal(map[string]any{"$type": collection, "text": text, "createdAt": "2026-12-02T15:04:05.000Z"})
	if err != nil {
		panic(err)
	}
	id, err := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: multihash.SHA2_256, MhLength: -1}.Sum(v)
	if err != nil {
		panic(err)
	}
	return v, id.Bytes()
}

// did returns a did:plc of the name (padded to the usual length).
func did(name string) string {
	return "did:plc:" + (name + strings.Repeat("a", 24))[:24]
}

// tid returns a record key / rev for i.
func tid(i int) string { return syntax.NewTID(1_700_000_000_000_000+int64(i), 0).String() }

// create returns a create event (not yet written).
func (f *fixture) create(didName, collection string) *store.Event {
	f.n++
	v, c := value(collection, fmt.Sprintf("record %d", f.n))
	return &store.Event{Kind: store.KindRecord, Live: true, DID: did(didName), Rev: tid(f.n),
		Time: time.Now(), Collection: collection, RKey: tid(f.n), Action: store.ActionCreate, CID: c, Record: v}
}

// write writes events in one transaction, as the indexer does: record
// events with their records.
func (f *fixture) write(t testing.TB, evs ...*store.Event) {
	t.Helper()
	err := f.w.Write(context.Background(), func(tx store.Tx) error {
		for _, ev := range evs {
			if ev.Kind == store.KindRecord {
				if err := store.WriteRecordChange(tx, ev); err != nil {
					return err
				}
			} else if err := tx.AppendEvent(ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeMixed writes n events over three repos and two collections, with
// an identity and an account event among them, and returns them.
func (f *fixture) writeMixed(t testing.TB, n int) []*store.Event {
	t.Helper()
	var evs []*store.Event
	for i := 0; i < n; i++ {
		who := []string{"alice", "bob", "carol"}[i%3]
		switch {
		case i%10 == 7:
			evs = append(evs, &store.Event{Kind: store.KindIdentity, Live: true, DID: did(who), Time: time.Now(), Handle: who + ".test"})
		case i%10 == 9:
			evs = append(evs, &store.Event{Kind: store.KindAccount, Live: true, DID: did(who), Time: time.Now(), Status: "deactivated"})
		default:
			evs = append(evs, f.create(who, []string{"app.bsky.feed.post", "app.bsky.feed.like", "xyz.statusphere.status"}[i%3]))
		}
	}
	// A few transactions, as the writer groups them.
	for i := 0; i < len(evs); i += 7 {
		f.write(t, evs[i:min(i+7, len(evs))]...)
	}
	return evs
}

// wsURL returns the ws:// URL of path with query q.
func (f *fixture) wsURL(path string, q url.Values) string {
	u := "ws" + strings.TrimPrefix(f.srv.URL, "http") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// message is a received Jetstream event, decoded loosely.
type message struct {
	DID    string `json:"did"`
	TimeUS int64  `json:"time_us"`
	Kind   string `json:"kind"`
	Commit *struct {
		Rev        string          `json:"rev"`
		Operation  string          `json:"operation"`
		Collection string          `json:"collection"`
		RKey       string          `json:"rkey"`
		Record     json.RawMessage `json:"record"`
		CID        string          `json:"cid"`
	} `json:"commit"`
	Identity *struct {
		DID    string `json:"did"`
		Handle string `json:"handle"`
		Seq    uint64 `json:"seq"`
	} `json:"identity"`
	Account *struct {
		DID    string `json:"did"`
		Active bool   `json:"active"`
		Status string `json:"status"`
		Seq    uint64 `json:"seq"`
	} `json:"account"`
	raw []byte
}

// key identifies the event a message carries.
func (m message) key() string {
	switch {
	case m.Commit != nil:
		return m.DID + " " + m.Commit.Operation + " " + m.Commit.Collection + "/" + m.Commit.RKey + " " + m.Commit.CID
	case m.Identity != nil:
		return fmt.Sprintf("%s identity %s #%d", m.DID, m.Identity.Handle, m.Identity.Seq)
	case m.Account != nil:
		return fmt.Sprintf("%s account %v %s #%d", m.DID, m.Account.Active, m.Account.Status, m.Account.Seq)
	}
	return "?" + string(m.raw)
}

// eventKey is the key a message of ev has.
func eventKey(ev *store.Event) string {
	switch ev.Kind {
	case store.KindRecord:
		c, _ := cid.Cast(ev.CID)
		cs := ""
		if ev.CID != nil {
			cs = c.String()
		}
		return ev.DID + " " + ev.Action.String() + " " + ev.Collection + "/" + ev.RKey + " " + cs
	case store.KindIdentity:
		return fmt.Sprintf("%s identity %s #%d", ev.DID, ev.Handle, ev.ID)
	default:
		return fmt.Sprintf("%s account %v %s #%d", ev.DID, ev.Active, ev.Status, ev.ID)
	}
}

func keys(evs []*store.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, eventKey(ev))
	}
	return out
}

// client is a Go WebSocket client of /subscribe.
type client struct {
	t    testing.TB
	conn *websocket.Conn
}

func dial(t testing.TB, u string, header http.Header) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		t.Fatalf("dial %.200s: %.300v", u, err)
	}
	conn.SetReadLimit(1 << 24)
	t.Cleanup(func() { conn.CloseNow() })
	return &client{t: t, conn: conn}
}

// next reads one message within 10s; decode turns binary frames into JSON.
func (c *client) next(decode func([]byte) []byte) (message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.conn.Read(ctx)
	if err != nil {
		return message{}, err
	}
	if typ == websocket.MessageBinary {
		if decode == nil {
			c.t.Fatalf("binary frame on an uncompressed connection")
		}
		b = decode(b)
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("message %q: %v", b, err)
	}
	m.raw = b
	return m, nil
}

// take reads n messages.
func (c *client) take(n int) []message {
	c.t.Helper()
	var out []message
	for len(out) < n {
		m, err := c.next(nil)
		if err != nil {
			c.t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		out = append(out, m)
	}
	return out
}

func msgKeys(ms []message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.key())
	}
	return out
}

// quiet asserts that no message comes within d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if _, b, err := c.conn.Read(ctx); err == nil {
		c.t.Fatalf("unexpected message %s", b)
	}
}

// metricValue returns the value of one of the handler's counters or gauges.
func metricValue(t testing.TB, h *jetstream.Handler, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// bufListener sets the send buffer of the connections it accepts.
type bufListener struct {
	net.Listener
	size int
}

func (l bufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(l.size)
	}
	return c, err
}
