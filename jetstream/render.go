package jetstream

import (
	"fmt"
	"strconv"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// timeLayout is the form of the "time" field of identity and account
// events: RFC 3339 in UTC with milliseconds, as the firehose writes it.
const timeLayout = "2006-01-02T15:04:05.000Z"

// AppendEvent appends the Jetstream JSON form of ev to dst and returns the
// extended buffer:
//
//	{"did":"did:plc:…","time_us":1733000000000000,"kind":"commit","commit":{"rev":"…","operation":"create","collection":"app.bsky.feed.post","rkey":"…","record":{…},"cid":"bafy…"}}
//	{"did":"did:plc:…","time_us":…,"kind":"identity","identity":{"did":"did:plc:…","handle":"alice.test","seq":42,"time":"2026-12-02T15:04:05.000Z"}}
//	{"did":"did:plc:…","time_us":…,"kind":"account","account":{"active":false,"did":"did:plc:…","seq":43,"status":"deactivated","time":"…"}}
//
// time_us is ev.Time in unix microseconds. A delete has neither "record"
// nor "cid"; an empty handle or status is left out. "seq", which Jetstream
// copies from the relay, is cistern's event id. The record value is
// transcoded from DAG-CBOR to atproto JSON as in stream.AppendEventJSON.
// When the value does not transcode, the error wraps
// stream.ErrInvalidRecord and the bytes appended are the event without
// its record (a caller may send them, as the Handler does, so that no
// event goes missing); for other errors dst is returned unextended.
func AppendEvent(dst []byte, ev *store.Event) ([]byte, error) {
	orig := len(dst)
	dst = append(dst, `{"did":`...)
	dst = stream.AppendJSONString(dst, ev.DID)
	dst = append(dst, `,"time_us":`...)
	dst = strconv.AppendInt(dst, ev.Time.UnixMicro(), 10)
	switch ev.Kind {
	case store.KindRecord:
		dst = append(dst, `,"kind":"commit","commit":{"rev":`...)
		dst = stream.AppendJSONString(dst, ev.Rev)
		dst = append(dst, `,"operation":"`...)
		switch ev.Action {
		case store.ActionCreate, store.ActionUpdate, store.ActionDelete:
			dst = append(dst, ev.Action.String()...)
		default:
			return dst[:orig], fmt.Errorf("jetstream: event %d: unknown action %v", ev.ID, ev.Action)
		}
		dst = append(dst, `","collection":`...)
		dst = stream.AppendJSONString(dst, ev.Collection)
		dst = append(dst, `,"rkey":`...)
		dst = stream.AppendJSONString(dst, ev.RKey)
		var recErr error
		if ev.Action != store.ActionDelete {
			if len(ev.Record) > 0 {
				mark := len(dst)
				dst = append(dst, `,"record":`...)
				if dst, recErr = stream.AppendRecordJSON(dst, ev.Record); recErr != nil {
					dst = dst[:mark]
					recErr = fmt.Errorf("jetstream: event %d: %w", ev.ID, recErr)
				}
			}
			if len(ev.CID) > 0 {
				var err error
				dst = append(dst, `,"cid":"`...)
				if dst, err = stream.AppendCID(dst, ev.CID); err != nil {
					return dst[:orig], fmt.Errorf("jetstream: event %d: cid: %w", ev.ID, err)
				}
				dst = append(dst, '"')
			}
		}
		return append(dst, "}}"...), recErr
	case store.KindIdentity:
		dst = append(dst, `,"kind":"identity","identity":{"did":`...)
		dst = stream.AppendJSONString(dst, ev.DID)
		if ev.Handle != "" {
			dst = append(dst, `,"handle":`...)
			dst = stream.AppendJSONString(dst, ev.Handle)
		}
		dst = appendSeq(dst, ev)
		dst = appendTime(dst, ev)
	case store.KindAccount:
		dst = append(dst, `,"kind":"account","account":{"active":`...)
		dst = strconv.AppendBool(dst, ev.Active)
		dst = append(dst, `,"did":`...)
		dst = stream.AppendJSONString(dst, ev.DID)
		dst = appendSeq(dst, ev)
		if ev.Status != "" {
			dst = append(dst, `,"status":`...)
			dst = stream.AppendJSONString(dst, ev.Status)
		}
		dst = appendTime(dst, ev)
	default:
		return dst[:orig], fmt.Errorf("jetstream: event %d: unknown kind %v", ev.ID, ev.Kind)
	}
	return append(dst, "}}"...), nil
}

// Fields of identity and account objects come in key order, as
// Jetstream's do.
func appendSeq(dst []byte, ev *store.Event) []byte {
	dst = append(dst, `,"seq":`...)
	return strconv.AppendUint(dst, ev.ID, 10)
}

func appendTime(dst []byte, ev *store.Event) []byte {
	dst = append(dst, `,"time":"`...)
	dst = ev.Time.UTC().AppendFormat(dst, timeLayout)
	return append(dst, '"')
}
