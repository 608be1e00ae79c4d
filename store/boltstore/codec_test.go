package boltstore

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

func TestEventCodec(t *testing.T) {
	tests := []struct {
		name string
		ev   store.Event
	}{
		{"record", store.Event{Kind: store.KindRecord, Live: true, DID: "did:plc:a", Rev: "3k1",
			Time: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC), Collection: "app.bsky.feed.post",
			RKey: "3k1", Action: store.ActionCreate, CID: []byte{1, 0x71, 0x12, 0x20, 9}}},
		{"zero time", store.Event{Kind: store.KindIdentity, DID: "did:plc:b", Handle: "b.test"}},
		{"before 1970", store.Event{Kind: store.KindAccount, DID: "did:plc:c", Time: time.Unix(-1, 5).UTC(), Status: "takendown"}},
		{"far future", store.Event{Kind: store.KindAccount, DID: "did:plc:c", Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), Active: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const repo, coll = 1 << 30, 1<<32 - 1
			v := appendEvent(nil, &tc.ev, repo, coll)
			if len(v) > eventLen(&tc.ev) {
				t.Errorf("encoding is %d bytes, eventLen bounds it at %d", len(v), eventLen(&tc.ev))
			}
			var got store.Event
			id, collID, err := parseEvent(v, &got)
			if err != nil {
				t.Fatal(err)
			}
			if id != repo || collID != coll {
				t.Errorf("repo id %d, collection id %d, want %d %d", id, collID, repo, coll)
			}
			got.DID, got.Collection = tc.ev.DID, tc.ev.Collection // stored as ids
			if !reflect.DeepEqual(got, tc.ev) {
				t.Errorf("round trip =\n%+v\nwant\n%+v", got, tc.ev)
			}
			// Every truncation is refused, none panics.
			for i := range len(v) {
				if _, _, err := parseEvent(v[:i], &got); !errors.Is(err, errMalformed) {
					t.Errorf("parse of the first %d of %d bytes: error %v, want errMalformed", i, len(v), err)
				}
			}
		})
	}
}

func TestRecordAndBlockCodecs(t *testing.T) {
	cid := []byte{1, 0x71, 0x12, 0x20, 7, 7}
	v := appendRecordValue(nil, cid, "3kabc", 1<<40)
	gcid, rev, seq, err := parseRecordValue(v)
	if err != nil || string(gcid) != string(cid) || string(rev) != "3kabc" || seq != 1<<40 {
		t.Errorf("record value round trip = %x %q %d %v", gcid, rev, seq, err)
	}
	if _, _, _, err := parseRecordValue(v[:3]); !errors.Is(err, errMalformed) {
		t.Errorf("truncated record value: error %v, want errMalformed", err)
	}
	for _, tc := range []struct {
		refs  uint64
		value []byte
		has   bool
	}{{3, []byte("value"), true}, {1, nil, false}, {2, []byte{}, true}} {
		b := appendBlockValue(nil, tc.refs, tc.value, tc.has)
		refs, value, has, err := parseBlockValue(b)
		if err != nil || refs != tc.refs || has != tc.has || string(value) != string(tc.value) {
			t.Errorf("block %d %q %v: round trip %d %q %v %v", tc.refs, tc.value, tc.has, refs, value, has, err)
		}
	}
	if _, _, _, err := parseBlockValue(nil); !errors.Is(err, errMalformed) {
		t.Errorf("empty block entry: error %v, want errMalformed", err)
	}
}
