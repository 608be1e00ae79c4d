package stream_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

func TestAppendEventJSON(t *testing.T) {
	value, c := post("hello \"world\"\n")
	cidStr, _ := cid.Cast(c)
	tests := []struct {
		name string
		ev   *store.Event
		want string
	}{
		{"create", &store.Event{ID: 7, Kind: store.KindRecord, Live: true, DID: "did:plc:alice", Rev: "3labc",
			Collection: "app.bsky.feed.post", RKey: "3kxyz", Action: store.ActionCreate, CID: c, Record: value},
			`{"id":7,"type":"record","record":{"live":true,"did":"did:plc:alice","rev":"3labc","collection":"app.bsky.feed.post","rkey":"3kxyz","action":"create","cid":"` +
				cidStr.String() + `","record":{"text":"hello \"world\"\n","$type":"app.bsky.feed.post","createdAt":"2026-01-02T03:04:05.000Z"}}}`},
		{"update from backfill", &store.Event{ID: 8, Kind: store.KindRecord, DID: "did:plc:alice", Rev: "3labd",
			Collection: "app.bsky.feed.post", RKey: "3kxyz", Action: store.ActionUpdate, CID: c, Record: value},
			`{"id":8,"type":"record","record":{"live":false,"did":"did:plc:alice","rev":"3labd","collection":"app.bsky.feed.post","rkey":"3kxyz","action":"update","cid":"` +
				cidStr.String() + `","record":{"text":"hello \"world\"\n","$type":"app.bsky.feed.post","createdAt":"2026-01-02T03:04:05.000Z"}}}`},
		{"delete", &store.Event{ID: 9, Kind: store.KindRecord, Live: true, DID: "did:plc:alice", Rev: "3labe",
			Collection: "app.bsky.feed.post", RKey: "3kxyz", Action: store.ActionDelete},
			`{"id":9,"type":"record","record":{"live":true,"did":"did:plc:alice","rev":"3labe","collection":"app.bsky.feed.post","rkey":"3kxyz","action":"delete"}}`},
		{"identity", &store.Event{ID: 10, Kind: store.KindIdentity, DID: "did:plc:alice", Handle: "alice.test"},
			`{"id":10,"type":"identity","identity":{"did":"did:plc:alice","handle":"alice.test"}}`},
		{"identity without handle", &store.Event{ID: 11, Kind: store.KindIdentity, DID: "did:plc:alice"},
			`{"id":11,"type":"identity","identity":{"did":"did:plc:alice"}}`},
		{"account inactive", &store.Event{ID: 12, Kind: store.KindAccount, DID: "did:plc:alice", Status: "deactivated"},
			`{"id":12,"type":"account","account":{"did":"did:plc:alice","active":false,"status":"deactivated"}}`},
		{"account active", &store.Event{ID: 13, Kind: store.KindAccount, DID: "did:plc:alice", Active: true},
			`{"id":13,"type":"account","account":{"did":"did:plc:alice","active":true}}`},
		{"repo sync failed", &store.Event{ID: 14, Kind: store.KindRepo, DID: "did:plc:alice", Status: "error", Error: `fetch: getRepo answered 502 "Bad Gateway"`},
			`{"id":14,"type":"repo","repo":{"did":"did:plc:alice","state":"error","error":"fetch: getRepo answered 502 \"Bad Gateway\""}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stream.EventJSON(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatal("not valid JSON")
			}
			// Appending keeps what was in dst.
			got2, err := stream.AppendEventJSON([]byte("x"), tt.ev)
			if err != nil || string(got2) != "x"+tt.want {
				t.Fatalf("append: %s, %v", got2, err)
			}
		})
	}
}

func TestAppendNoticeAndErrorJSON(t *testing.T) {
	got := stream.AppendNoticeJSON(nil, stream.Notice{Name: "OutdatedCursor", Message: "events 1 to 9 were pruned"})
	if want := `{"type":"info","info":{"name":"OutdatedCursor","message":"events 1 to 9 were pruned"}}`; string(got) != want {
		t.Fatalf("notice: got %s, want %s", got, want)
	}
	got = stream.AppendErrorJSON(nil, "FutureCursor", `cursor "9" is <ahead>`)
	if want := `{"type":"error","error":"FutureCursor","message":"cursor \"9\" is <ahead>"}`; string(got) != want {
		t.Fatalf("error: got %s, want %s", got, want)
	}
}

// The record value transcoding agrees with the atproto data model interop
// fixtures (compared as JSON values: key order is DAG-CBOR's).
func TestAppendEventJSON_InteropFixtures(t *testing.T) {
	raw, err := os.ReadFile("testdata/data-model-fixtures.json")
	if err != nil {
		t.Fatal(err)
	}
	var fixtures []struct {
		JSON json.RawMessage `json:"json"`
		CBOR string          `json:"cbor_base64"`
	}
	if err := json.Unmarshal(raw, &fixtures); err != nil {
		t.Fatal(err)
	}
	for i, f := range fixtures {
		value, err := base64.RawStdEncoding.DecodeString(f.CBOR)
		if err != nil {
			t.Fatal(err)
		}
		out, err := stream.EventJSON(&store.Event{ID: 1, Kind: store.KindRecord, Action: store.ActionCreate, Record: value})
		if err != nil {
			t.Fatalf("fixture %d: %v", i, err)
		}
		var got struct {
			Record struct {
				Record any `json:"record"`
			} `json:"record"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("fixture %d: output is not JSON: %v\n%s", i, err, out)
		}
		var want any
		if err := json.Unmarshal(f.JSON, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Record.Record, want) {
			t.Errorf("fixture %d:\ngot  %v\nwant %v", i, got.Record.Record, want)
		}
	}
}

func TestAppendEventJSON_InvalidRecords(t *testing.T) {
	tests := []struct {
		name string
		cbor []byte
	}{
		{"not a map", []byte{0x83, 0x01, 0x02, 0x03}},
		{"truncated", []byte{0xa1, 0x61, 'a'}},
		{"trailing bytes", []byte{0xa0, 0x00}},
		{"integer key", []byte{0xa1, 0x01, 0x02}},
		{"indefinite map", []byte{0xbf, 0xff}},
		{"fractional float", []byte{0xa1, 0x61, 'a', 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}},
		{"other tag", []byte{0xa1, 0x61, 'a', 0xc1, 0x01}},
		{"link without prefix", []byte{0xa1, 0x61, 'a', 0xd8, 0x2a, 0x42, 0x01, 0x71}},
		{"invalid UTF-8", []byte{0xa1, 0x61, 'a', 0x61, 0xff}},
		{"huge length", []byte{0xa1, 0x61, 'a', 0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"undefined", []byte{0xa1, 0x61, 'a', 0xf7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("kept")
			out, err := stream.AppendEventJSON(dst, &store.Event{ID: 1, Kind: store.KindRecord, Action: store.ActionCreate, Record: tt.cbor})
			if !errors.Is(err, stream.ErrInvalidRecord) {
				t.Fatalf("err = %v, want ErrInvalidRecord (out %s)", err, out)
			}
			if string(out) != "kept" {
				t.Fatalf("dst changed to %q on error", out)
			}
		})
	}
	// An integral float is accepted as an integer, as atdata does.
	out, err := stream.EventJSON(&store.Event{ID: 1, Kind: store.KindRecord, Action: store.ActionCreate,
		Record: []byte{0xa1, 0x61, 'a', 0xfb, 0x40, 0x08, 0, 0, 0, 0, 0, 0}})
	if err != nil || !json.Valid(out) {
		t.Fatalf("integral float: %s, %v", out, err)
	}
}

// Strings escape like encoding/json (without its HTML escaping).
func TestAppendEventJSON_StringEscaping(t *testing.T) {
	for _, s := range []string{"plain", "quote\" back\\slash", "ctl\x00\x01\x1f\t\r\n", "ünï©ødé 😀", "bad\xffutf8", "line\u2028sep\u2029", "<&>"} {
		out, err := stream.EventJSON(&store.Event{ID: 1, Kind: store.KindIdentity, DID: s})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Identity struct{ DID string } `json:"identity"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q: %v in %s", s, err, out)
		}
		want := s
		if s == "bad\xffutf8" {
			want = "bad\ufffdutf8"
		}
		if got.Identity.DID != want {
			t.Errorf("%q round-tripped to %q", s, got.Identity.DID)
		}
	}
}

func FuzzAppendEventJSON(f *testing.F) {
	value, _ := post("seed")
	f.Add(value)
	f.Add([]byte{0xa1, 0x61, 'a', 0xd8, 0x2a, 0x42, 0x00, 0x71})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := stream.EventJSON(&store.Event{ID: 1, Kind: store.KindRecord, Action: store.ActionCreate, Record: b})
		if err == nil && !json.Valid(out) {
			t.Fatalf("invalid JSON %s from %x", out, b)
		}
	})
}

func BenchmarkAppendEventJSON(b *testing.B) {
	value, c := post("a reasonably ordinary post of a few words, with an emoji 😀 and \"quotes\"")
	ev := &store.Event{ID: 123456, Kind: store.KindRecord, Live: true, DID: "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
		Rev: "3lbyq2j7s5k2s", Collection: "app.bsky.feed.post", RKey: "3lbyq2j7ryk2s",
		Action: store.ActionCreate, CID: c, Record: value}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = stream.AppendEventJSON(buf[:0], ev)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.SetBytes(int64(len(buf)))
}
