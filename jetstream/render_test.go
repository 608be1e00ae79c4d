package jetstream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/jetstream"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

func TestAppendEvent_Shapes(t *testing.T) {
	at := time.Date(2026, 12, 2, 15, 4, 5, 123456789, time.UTC)
	v, c := value("app.bsky.feed.post", "hi")
	cs, _ := cid.Cast(c)
	alice := did("alice")
	tests := []struct {
		name string
		ev   store.Event
		want string
	}{
		{"create", store.Event{ID: 1, Kind: store.KindRecord, DID: alice, Rev: "3lrev", Time: at, Collection: "app.bsky.feed.post",
			RKey: "3lkey", Action: store.ActionCreate, CID: c, Record: v},
			`{"did":"` + alice + `","time_us":1796223845123456,"kind":"commit","commit":{"rev":"3lrev","operation":"create","collection":"app.bsky.feed.post","rkey":"3lkey","record":{"text":"hi","$type":"app.bsky.feed.post","createdAt":"2026-12-02T15:04:05.000Z"},"cid":"` + cs.String() + `"}}`},
		{"delete", store.Event{ID: 2, Kind: store.KindRecord, DID: alice, Rev: "3lrev", Time: at, Collection: "app.bsky.feed.post",
			RKey: "3lkey", Action: store.ActionDelete},
			`{"did":"` + alice + `","time_us":1796223845123456,"kind":"commit","commit":{"rev":"3lrev","operation":"delete","collection":"app.bsky.feed.post","rkey":"3lkey"}}`},
		{"identity", store.Event{ID: 3, Kind: store.KindIdentity, DID: alice, Time: at, Handle: "alice.test"},
			`{"did":"` + alice + `","time_us":1796223845123456,"kind":"identity","identity":{"did":"` + alice + `","handle":"alice.test","seq":3,"time":"2026-12-02T15:04:05.123Z"}}`},
		{"identity without handle", store.Event{ID: 4, Kind: store.KindIdentity, DID: alice, Time: at},
			`{"did":"` + alice + `","time_us":1796223845123456,"kind":"identity","identity":{"did":"` + alice + `","seq":4,"time":"2026-12-02T15:04:05.123Z"}}`},
		{"account active", store.Event{ID: 5, Kind: store.KindAccount, DID: alice, Time: at, Active: true},
			`{"did":"` + alice + `","time_us":1796223845123456,"kind":"account","account":{"active":true,"did":"` + alice + `","seq":5,"time":"2026-12-02T15:04:05.123Z"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := jetstream.AppendEvent([]byte("prefix "), &tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "prefix "+tc.want {
				t.Errorf("got\n%s\nwant\n%s", got[7:], tc.want)
			}
		})
	}

	// A value that does not transcode: the event without it, and the error.
	bad := store.Event{ID: 6, Kind: store.KindRecord, DID: alice, Rev: "3lrev", Time: at, Collection: "app.bsky.feed.post",
		RKey: "3lkey", Action: store.ActionCreate, CID: c, Record: []byte{0xa1, 0x61}}
	got, err := jetstream.AppendEvent(nil, &bad)
	if !errors.Is(err, stream.ErrInvalidRecord) {
		t.Errorf("invalid record: error %v, want ErrInvalidRecord", err)
	}
	want := `{"did":"` + alice + `","time_us":1796223845123456,"kind":"commit","commit":{"rev":"3lrev","operation":"create","collection":"app.bsky.feed.post","rkey":"3lkey","cid":"` + cs.String() + `"}}`
	if string(got) != want {
		t.Errorf("invalid record rendered\n%s\nwant\n%s", got, want)
	}
	// An unknown kind renders nothing.
	if got, err := jetstream.AppendEvent([]byte("x"), &store.Event{Kind: 9}); err == nil || string(got) != "x" {
		t.Errorf("unknown kind: %q, %v", got, err)
	}
}
