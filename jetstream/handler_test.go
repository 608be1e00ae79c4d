package jetstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/zstd"

	"github.com/cistern-dev/cistern/jetstream"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

func TestSubscribe_BadParametersAnswer400(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	many := func(name string, n int, gen func(i int) string) url.Values {
		q := url.Values{}
		for i := 0; i < n; i++ {
			q.Add(name, gen(i))
		}
		return q
	}
	tests := []struct {
		name  string
		q     url.Values
		param string
	}{
		{"bad collection", url.Values{"wantedCollections": {"app.bsky.feed.*post"}}, "wantedCollections"},
		{"not an NSID", url.Values{"wantedCollections": {"post"}}, "wantedCollections"},
		{"101 collections", many("wantedCollections", 101, func(i int) string { return fmt.Sprintf("com.example.c%d", i) }), "wantedCollections"},
		{"bad DID", url.Values{"wantedDids": {"alice"}}, "wantedDids"},
		{"10,001 DIDs", many("wantedDids", 10_001, func(i int) string { return fmt.Sprintf("did:plc:%024d", i) }), "wantedDids"},
		{"cursor not a number", url.Values{"cursor": {"yesterday"}}, "cursor"},
		{"negative cursor", url.Values{"cursor": {"-5"}}, "cursor"},
		{"compress", url.Values{"compress": {"maybe"}}, "compress"},
		{"requireHello", url.Values{"requireHello": {"please"}}, "requireHello"},
		{"maxMessageSizeBytes", url.Values{"maxMessageSizeBytes": {"big"}}, "maxMessageSizeBytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(f.srv.URL + "/subscribe?" + tc.q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct{ Error, Message string }
			json.Unmarshal(body, &e)
			if resp.StatusCode != http.StatusBadRequest || e.Error != "InvalidRequest" || !strings.HasPrefix(e.Message, tc.param+":") {
				t.Errorf("got %d %s, want 400 InvalidRequest naming %s", resp.StatusCode, body, tc.param)
			}
		})
	}
	// Duplicates count once, as in Jetstream. (A query holds at most
	// 10,000 parameters in Go, so this is checked on the filter.)
	var dids, colls []string
	for i := 0; i < 10_050; i++ {
		dids = append(dids, fmt.Sprintf("did:plc:%024d", i%10_000))
	}
	for i := 0; i < 150; i++ {
		colls = append(colls, fmt.Sprintf("com.example.c%d", i%100))
	}
	fl, err := jetstream.NewFilter(colls, dids, -1)
	if err != nil {
		t.Fatalf("NewFilter with duplicates: %v", err)
	}
	if len(fl.DIDs()) != 10_000 || len(fl.Collections()) != 100 || fl.MaxMessageSizeBytes() != 0 {
		t.Errorf("filter holds %d DIDs, %d collections, limit %d; want 10000, 100, 0",
			len(fl.DIDs()), len(fl.Collections()), fl.MaxMessageSizeBytes())
	}
}

func TestSubscribe_ReplayFromCursorThenLive(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{PageSize: 4, Buffer: 2})
	evs := f.writeMixed(t, 40)
	// All of it, then from the cursor of event 12, whose time_us the
	// client saw last.
	all := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {"0"}}), nil).take(40)
	if got, want := msgKeys(all), keys(evs); !reflect.DeepEqual(got, want) {
		t.Fatalf("replay of the whole log:\n got %v\nwant %v", got, want)
	}
	for i := 1; i < len(all); i++ {
		if all[i].TimeUS <= all[i-1].TimeUS {
			t.Fatalf("time_us does not increase: %d then %d", all[i-1].TimeUS, all[i].TimeUS)
		}
	}
	c := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {fmt.Sprint(all[11].TimeUS)}}), nil)
	got := c.take(28)
	if !reflect.DeepEqual(msgKeys(got), keys(evs[12:])) {
		t.Fatalf("replay after event 12:\n got %v\nwant %v", msgKeys(got), keys(evs[12:]))
	}
	live := f.writeMixed(t, 15)
	if got := msgKeys(c.take(15)); !reflect.DeepEqual(got, keys(live)) {
		t.Fatalf("live after replay:\n got %v\nwant %v", got, keys(live))
	}
}

func TestSubscribe_NoCursorOrFutureCursorIsLive(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	f.writeMixed(t, 10)
	for _, q := range []url.Values{nil, {"cursor": {fmt.Sprint(time.Now().Add(time.Hour).UnixMicro())}}} {
		c := dial(t, f.wsURL("/subscribe", q), nil)
		// The subscription starts at connect; give it a moment to have
		// resolved its start before writing.
		time.Sleep(50 * time.Millisecond)
		live := f.writeMixed(t, 5)
		if got := msgKeys(c.take(5)); !reflect.DeepEqual(got, keys(live)) {
			t.Fatalf("%v: got %v, want only the new events %v", q, got, keys(live))
		}
	}
}

func TestSubscribe_Filters(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	evs := f.writeMixed(t, 60)
	tests := []struct {
		name string
		q    url.Values
		keep func(ev *store.Event) bool
	}{
		{"one collection", url.Values{"wantedCollections": {"app.bsky.feed.like"}},
			func(ev *store.Event) bool {
				return ev.Kind != store.KindRecord || ev.Collection == "app.bsky.feed.like"
			}},
		{"prefix", url.Values{"wantedCollections": {"app.bsky.*"}},
			func(ev *store.Event) bool {
				return ev.Kind != store.KindRecord || strings.HasPrefix(ev.Collection, "app.bsky.")
			}},
		{"DIDs", url.Values{"wantedDids": {did("bob"), did("carol")}},
			func(ev *store.Event) bool { return ev.DID != did("alice") }},
		{"both", url.Values{"wantedDids": {did("alice")}, "wantedCollections": {"xyz.statusphere.status", "app.bsky.feed.post"}},
			func(ev *store.Event) bool {
				return ev.DID == did("alice") && (ev.Kind != store.KindRecord || ev.Collection != "app.bsky.feed.like")
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []*store.Event
			for _, ev := range evs {
				if tc.keep(ev) {
					want = append(want, ev)
				}
			}
			q := tc.q
			q.Set("cursor", "0")
			c := dial(t, f.wsURL("/subscribe", q), nil)
			if got := msgKeys(c.take(len(want))); !reflect.DeepEqual(got, keys(want)) {
				t.Fatalf("got %v\nwant %v", got, keys(want))
			}
			// The library filter agrees.
			fl, err := jetstream.NewFilter(q["wantedCollections"], q["wantedDids"], 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if fl.Match(ev) != tc.keep(ev) {
					t.Errorf("Filter.Match(%s) = %v", eventKey(ev), fl.Match(ev))
				}
			}
			c.quiet(100 * time.Millisecond)
		})
	}
}

func TestSubscribe_Compression(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	evs := f.writeMixed(t, 20)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderDicts(jetstream.Dictionary()))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	plainDec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plainDec.Close()
	plain := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {"0"}}), nil).take(20)
	for _, how := range []struct {
		name   string
		q      url.Values
		header http.Header
	}{
		{"compress=true", url.Values{"cursor": {"0"}, "compress": {"true"}}, nil},
		{"Socket-Encoding", url.Values{"cursor": {"0"}}, http.Header{"Socket-Encoding": {"zstd"}}},
	} {
		t.Run(how.name, func(t *testing.T) {
			c := dial(t, f.wsURL("/subscribe", how.q), how.header)
			total, compressed := 0, 0
			for i := range evs {
				m, err := c.next(func(b []byte) []byte {
					compressed += len(b)
					if _, err := plainDec.DecodeAll(b, nil); err == nil {
						t.Errorf("frame %d decodes without the dictionary", i)
					}
					out, err := dec.DecodeAll(b, nil)
					if err != nil {
						t.Fatalf("frame %d: %v", i, err)
					}
					return out
				})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(m.raw, plain[i].raw) {
					t.Fatalf("frame %d decompresses to\n%s\nwant\n%s", i, m.raw, plain[i].raw)
				}
				total += len(m.raw)
			}
			if compressed == 0 || compressed >= total {
				t.Errorf("compressed %d bytes of JSON to %d", total, compressed)
			}
		})
	}
}

func TestSubscribe_OptionsUpdate(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	c := dial(t, f.wsURL("/subscribe", url.Values{"wantedCollections": {"app.bsky.feed.post"}}), nil)
	time.Sleep(50 * time.Millisecond)
	first := f.writeMixed(t, 9)
	var want []*store.Event
	for _, ev := range first {
		if ev.Kind != store.KindRecord || ev.Collection == "app.bsky.feed.post" {
			want = append(want, ev)
		}
	}
	if got := msgKeys(c.take(len(want))); !reflect.DeepEqual(got, keys(want)) {
		t.Fatalf("before the update: got %v\nwant %v", got, keys(want))
	}
	update := `{"type":"options_update","payload":{"wantedCollections":["app.bsky.feed.like"],"wantedDids":["` + did("bob") + `"]}}`
	if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(update)); err != nil {
		t.Fatal(err)
	}
	// An unknown message type is ignored.
	c.conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"something_else","payload":{}}`))
	time.Sleep(100 * time.Millisecond)
	second := f.writeMixed(t, 30)
	want = nil
	for _, ev := range second {
		if ev.DID == did("bob") && (ev.Kind != store.KindRecord || ev.Collection == "app.bsky.feed.like") {
			want = append(want, ev)
		}
	}
	if got := msgKeys(c.take(len(want))); !reflect.DeepEqual(got, keys(want)) {
		t.Fatalf("after the update: got %v\nwant %v", got, keys(want))
	}

	// An invalid update closes the connection, saying why.
	for _, bad := range []string{
		`{"type":"options_update","payload":{"wantedDids":["bob"]}}`,
		`{"type":"options_update","payload":{"wantedCollections":"app.bsky.feed.post"}}`,
		`not json`,
	} {
		c := dial(t, f.wsURL("/subscribe", nil), nil)
		c.conn.Write(context.Background(), websocket.MessageText, []byte(bad))
		_, err := c.next(nil)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "options_update") {
			t.Errorf("after %s: read error %v, want a close 1008 with the reason", bad, err)
		}
	}
	if n := metricValue(t, f.h, "cistern_jetstream_invalid_options_updates_total"); n != 3 {
		t.Errorf("invalid updates counted %v, want 3", n)
	}
}

func TestSubscribe_RequireHelloWaitsForOptionsUpdate(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	evs := f.writeMixed(t, 12)
	c := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {"0"}, "requireHello": {"true"}, "wantedDids": {did("carol")}}), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	readDone := make(chan error, 1)
	go func() { _, _, err := c.conn.Reader(ctx); readDone <- err }()
	select {
	case err := <-readDone:
		if err == nil {
			t.Fatal("a message came before the hello")
		}
	case <-time.After(time.Second):
	}
	cancel()
	// The Reader's context ended the connection; dial again.
	c = dial(t, f.wsURL("/subscribe", url.Values{"cursor": {"0"}, "requireHello": {"true"}}), nil)
	time.Sleep(100 * time.Millisecond)
	hello := `{"type":"options_update","payload":{"wantedDids":["` + did("alice") + `"]}}`
	if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(hello)); err != nil {
		t.Fatal(err)
	}
	var want []*store.Event
	for _, ev := range evs {
		if ev.DID == did("alice") {
			want = append(want, ev)
		}
	}
	if got := msgKeys(c.take(len(want))); !reflect.DeepEqual(got, keys(want)) {
		t.Fatalf("after the hello: got %v\nwant %v", got, keys(want))
	}
}

func TestSubscribe_OutdatedCursorStartsAtOldestRetained(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	evs := f.writeMixed(t, 20)
	old := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {"0"}}), nil).take(20)
	if err := f.st.Update(context.Background(), func(tx store.Tx) error {
		_, err := tx.PruneEvents(evs[9].ID, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, cursor := range []int64{0, old[3].TimeUS} {
		c := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {fmt.Sprint(cursor)}}), nil)
		if got := msgKeys(c.take(10)); !reflect.DeepEqual(got, keys(evs[10:])) {
			t.Fatalf("cursor %d: got %v\nwant the retained events %v", cursor, got, keys(evs[10:]))
		}
	}
	// A cursor within the retained log is not outdated.
	c := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {fmt.Sprint(old[12].TimeUS)}}), nil)
	if got := msgKeys(c.take(7)); !reflect.DeepEqual(got, keys(evs[13:])) {
		t.Fatalf("retained cursor: got %v", got)
	}
	if n := metricValue(t, f.h, "cistern_jetstream_outdated_cursors_total"); n != 2 {
		t.Errorf("outdated cursors counted %v, want 2", n)
	}
}

func TestSubscribe_SlowClientDroppedThenResumes(t *testing.T) {
	// Small socket buffers on both sides and records of 8 KiB, so that a
	// client that stops reading fills them within a few dozen events.
	f := newFixture(t, jetstream.Options{WriteTimeout: 200 * time.Millisecond}, stream.Options{}, 32<<10)
	var evs []*store.Event
	for i := 0; i < 300; i++ {
		ev := f.create("alice", "app.bsky.feed.post")
		ev.Record, ev.CID = value("app.bsky.feed.post", fmt.Sprintf("%d %s", i, strings.Repeat("x", 8<<10)))
		evs = append(evs, ev)
	}
	for i := 0; i < len(evs); i += 100 {
		f.write(t, evs[i:i+100]...)
	}
	small := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10) })
			return errors.Join(err, serr)
		}}).DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, f.wsURL("/subscribe", url.Values{"cursor": {"0"}}), &websocket.DialOptions{HTTPClient: small})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(1 << 24)
	defer conn.CloseNow()
	c := &client{t: t, conn: conn}
	got := c.take(3) // then stop reading
	deadline := time.Now().Add(20 * time.Second)
	for metricValue(t, f.h, "cistern_jetstream_slow_disconnects_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the client that stopped reading was not disconnected (%v messages sent)", metricValue(t, f.h, "cistern_jetstream_events_sent_total"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It reads what was buffered until the connection ends, then resumes
	// from the last time_us it saw, as Jetstream clients do.
	for {
		m, err := c.next(nil)
		if err != nil {
			break
		}
		got = append(got, m)
	}
	if len(got) == len(evs) {
		t.Fatal("the whole log fit in the socket buffers; the test needs more data")
	}
	// (A loaded machine may drop a resumed connection too, with this
	// short timeout: it resumes again.)
	for attempt := 0; len(got) < len(evs); attempt++ {
		if attempt == 20 {
			t.Fatalf("%d of %d events after 20 resumptions", len(got), len(evs))
		}
		r := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {fmt.Sprint(got[len(got)-1].TimeUS)}}), nil)
		for len(got) < len(evs) {
			m, err := r.next(nil)
			if err != nil {
				break
			}
			got = append(got, m)
		}
		r.conn.CloseNow()
	}
	if !reflect.DeepEqual(msgKeys(got), keys(evs)) {
		t.Fatalf("after resuming, the events differ from the log (%d events)", len(got))
	}
}

// TestSubscribe_SameEventsAsStream compares /subscribe with /stream over
// the same range, event by event.
func TestSubscribe_SameEventsAsStream(t *testing.T) {
	f := newFixture(t, jetstream.Options{}, stream.Options{})
	evs := f.writeMixed(t, 30)
	js := dial(t, f.wsURL("/subscribe", url.Values{"cursor": {"0"}}), nil).take(30)
	sc := dial(t, f.wsURL("/stream", url.Values{"cursor": {"0"}}), nil)
	for i := range evs {
		_, b, err := sc.conn.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := sameEvent(js[i].raw, b); err != nil {
			t.Errorf("event %d: %v\n/subscribe: %s\n/stream:    %s", i+1, err, js[i].raw, b)
		}
	}
}

// sameEvent compares a Jetstream message with a /stream message.
func sameEvent(jsMsg, streamMsg []byte) error {
	var j map[string]any
	var s struct {
		ID       uint64         `json:"id"`
		Type     string         `json:"type"`
		Record   map[string]any `json:"record"`
		Identity map[string]any `json:"identity"`
		Account  map[string]any `json:"account"`
	}
	if err := json.Unmarshal(jsMsg, &j); err != nil {
		return err
	}
	if err := json.Unmarshal(streamMsg, &s); err != nil {
		return err
	}
	type pair struct{ a, b any }
	var checks map[string]pair
	switch s.Type {
	case "record":
		c := j["commit"].(map[string]any)
		checks = map[string]pair{"kind": {j["kind"], "commit"}, "did": {j["did"], s.Record["did"]},
			"rev": {c["rev"], s.Record["rev"]}, "operation": {c["operation"], s.Record["action"]},
			"collection": {c["collection"], s.Record["collection"]}, "rkey": {c["rkey"], s.Record["rkey"]},
			"cid": {c["cid"], s.Record["cid"]}, "record": {c["record"], s.Record["record"]}}
	case "identity":
		i := j["identity"].(map[string]any)
		checks = map[string]pair{"kind": {j["kind"], "identity"}, "did": {j["did"], s.Identity["did"]},
			"handle": {i["handle"], s.Identity["handle"]}, "seq": {i["seq"], float64(s.ID)}}
	case "account":
		a := j["account"].(map[string]any)
		checks = map[string]pair{"kind": {j["kind"], "account"}, "did": {j["did"], s.Account["did"]},
			"active": {a["active"], s.Account["active"]}, "status": {a["status"], s.Account["status"]}, "seq": {a["seq"], float64(s.ID)}}
	default:
		return fmt.Errorf("unknown /stream type %q", s.Type)
	}
	for name, p := range checks {
		if !reflect.DeepEqual(p.a, p.b) {
			return fmt.Errorf("%s: %v on /subscribe, %v on /stream", name, p.a, p.b)
		}
	}
	return nil
}
