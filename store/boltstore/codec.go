package boltstore

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/fxamacker/cbor/v2"
)

// codecs returns the CBOR modes a DB encodes and decodes repo states and
// buffered commits with: core deterministic encoding, times as RFC 3339
// strings in UTC with nanoseconds (exact round trips), and decoding that
// ignores unknown fields so that new fields can be added under new keys.
// Events and record entries, written once per record, use the hand-written
// binary forms below instead.
func codecs() (cbor.EncMode, cbor.DecMode, error) {
	eo := cbor.CoreDetEncOptions()
	eo.Time = cbor.TimeRFC3339NanoUTC
	enc, err := eo.EncMode()
	if err != nil {
		return nil, nil, err
	}
	dec, err := cbor.DecOptions{}.DecMode()
	if err != nil {
		return nil, nil, err
	}
	return enc, dec, nil
}

// errMalformed is wrapped by the errors of the binary decoders.
var errMalformed = errors.New("malformed value")

// reader consumes a binary value; the first error sticks.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a uvarint-length-prefixed field, aliasing the input.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// appendBytes appends b prefixed with its length as a uvarint.
func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// appendString appends s prefixed with its length as a uvarint.
func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// Record entries (the records bucket):
//
//	uvarint seq | uvarint len(CID) | CID | rev (to the end)

// appendRecordValue encodes a records entry.
func appendRecordValue(dst, cid []byte, rev string, seq uint64) []byte {
	dst = binary.AppendUvarint(dst, seq)
	dst = appendBytes(dst, cid)
	return append(dst, rev...)
}

// parseRecordValue decodes a records entry; cid aliases v.
func parseRecordValue(v []byte) (cid []byte, rev []byte, seq uint64, err error) {
	r := reader{b: v}
	seq = r.uvarint()
	cid = r.bytes()
	if r.bad {
		return nil, nil, 0, errMalformed
	}
	return cid, r.b, seq, nil
}

// Blocks (the blocks bucket):
//
//	uvarint (refs << 1 | has value) | value (to the end)
//
// A reference may be counted before any write has brought the value; the
// low bit tells such an entry from one holding an empty value.

// appendBlockValue encodes a blocks entry.
func appendBlockValue(dst []byte, refs uint64, value []byte, hasValue bool) []byte {
	h := refs << 1
	if hasValue {
		h |= 1
	}
	dst = binary.AppendUvarint(dst, h)
	return append(dst, value...)
}

// parseBlockValue decodes a blocks entry; value aliases v and is nil when
// the entry holds no value.
func parseBlockValue(v []byte) (refs uint64, value []byte, hasValue bool, err error) {
	h, n := binary.Uvarint(v)
	if n <= 0 {
		return 0, nil, false, errMalformed
	}
	if h&1 == 0 {
		return h >> 1, nil, false, nil
	}
	return h >> 1, v[n:len(v):len(v)], true, nil
}

// Events (the events bucket), without the record value:
//
//	format (1) | kind | flags (1: live, 2: active) | action |
//	varint Unix seconds | uvarint nanoseconds | uvarint repo id (0: no DID) |
//	uvarint collection id (0: none) | rev | rkey | CID | handle | status [| error]
//
// each of the last five (six) a uvarint length and the bytes; error, added
// for repo events, is written only when set, so that older events read
// as they are. Times are exact to
// the nanosecond over the whole range of time.Time and read back in UTC.
const eventFormat = 1

const (
	flagLive   = 1
	flagActive = 2
)

// appendEvent encodes an event of the repo id, in the collection collID.
func appendEvent(dst []byte, ev *store.Event, id, collID uint32) []byte {
	var flags byte
	if ev.Live {
		flags |= flagLive
	}
	if ev.Active {
		flags |= flagActive
	}
	dst = append(dst, eventFormat, byte(ev.Kind), flags, byte(ev.Action))
	dst = binary.AppendVarint(dst, ev.Time.Unix())
	dst = binary.AppendUvarint(dst, uint64(ev.Time.Nanosecond()))
	dst = binary.AppendUvarint(dst, uint64(id))
	dst = binary.AppendUvarint(dst, uint64(collID))
	dst = appendString(dst, ev.Rev)
	dst = appendString(dst, ev.RKey)
	dst = appendBytes(dst, ev.CID)
	dst = appendString(dst, ev.Handle)
	dst = appendString(dst, ev.Status)
	if ev.Error != "" {
		dst = appendString(dst, ev.Error)
	}
	return dst
}

// eventLen bounds the length of ev's encoding.
func eventLen(ev *store.Event) int {
	return 4 + 2*binary.MaxVarintLen64 + 7*binary.MaxVarintLen32 +
		len(ev.Rev) + len(ev.RKey) + len(ev.CID) + len(ev.Handle) + len(ev.Status) +
		binary.MaxVarintLen32 + len(ev.Error)
}

// eventFields is an encoded event with its fields aliasing the encoding.
type eventFields struct {
	kind, flags, action            byte
	sec                            int64
	nsec                           uint64
	did, collection                uint32
	rev, rkey, cid, handle, status []byte
	errText                        []byte
}

// parseEventFields splits an encoded event without copying.
func parseEventFields(v []byte) (eventFields, error) {
	var f eventFields
	r := reader{b: v}
	if r.byte() != eventFormat {
		return f, errMalformed
	}
	f.kind, f.flags, f.action = r.byte(), r.byte(), r.byte()
	f.sec, f.nsec = r.varint(), r.uvarint()
	did, coll := r.uvarint(), r.uvarint()
	f.did, f.collection = uint32(did), uint32(coll)
	f.rev, f.rkey = r.bytes(), r.bytes()
	f.cid, f.handle, f.status = r.bytes(), r.bytes(), r.bytes()
	if len(r.b) > 0 {
		f.errText = r.bytes()
	}
	if r.bad || f.nsec >= 1e9 || did > math.MaxUint32 || coll > math.MaxUint32 {
		return f, errMalformed
	}
	return f, nil
}

// parseEvent decodes an encoded event into ev and returns its repo and
// collection ids (ID, DID, Collection and Record untouched).
func parseEvent(v []byte, ev *store.Event) (id, collID uint32, err error) {
	f, err := parseEventFields(v)
	if err != nil {
		return 0, 0, err
	}
	ev.Kind = store.EventKind(f.kind)
	ev.Live = f.flags&flagLive != 0
	ev.Active = f.flags&flagActive != 0
	ev.Action = store.Action(f.action)
	ev.Time = unixTime(f.sec, f.nsec)
	ev.Rev = string(f.rev)
	ev.RKey = string(f.rkey)
	ev.CID = clone(nonEmpty(f.cid))
	ev.Handle = string(f.handle)
	ev.Status = string(f.status)
	ev.Error = string(f.errText)
	return f.did, f.collection, nil
}

// unixTime is time.Unix(sec, nsec) in UTC, the zero time for the zero
// time's own seconds.
func unixTime(sec int64, nsec uint64) time.Time {
	if sec == zeroTimeUnix && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// zeroTimeUnix is time.Time{}.Unix().
const zeroTimeUnix = -62135596800

// nonEmpty returns nil for an empty slice.
func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// bufferValue is what the buffer bucket holds for one buffered commit; DID
// and rev are in the key.
type bufferValue struct {
	Seq    int64  `cbor:"1,keyasint,omitempty"`
	Source string `cbor:"2,keyasint,omitempty"`
	Data   []byte `cbor:"3,keyasint,omitempty"`
}

// repoState decodes only the state of an encoded store.Repo.
type repoState struct {
	State  uint8  `cbor:"2,keyasint"`
	Handle string `cbor:"5,keyasint,omitempty"`
}
