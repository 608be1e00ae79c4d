package stream

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/store"
)

// ErrInvalidRecord is wrapped by the error AppendEventJSON returns when a
// record value is not valid DAG-CBOR in the atproto data model.
var ErrInvalidRecord = errors.New("stream: invalid record value")

// EventJSON renders an event as JSON; see AppendEventJSON.
func EventJSON(ev *store.Event) ([]byte, error) {
	return AppendEventJSON(make([]byte, 0, 256+len(ev.Record)*2), ev)
}

// AppendEventJSON appends the JSON form of ev to dst and returns the
// extended buffer. The forms are:
//
//	{"id":1,"type":"record","record":{"live":true,"did":"did:plc:…","rev":"…","collection":"app.bsky.feed.post","rkey":"…","action":"create","cid":"bafy…","record":{…}}}
//	{"id":2,"type":"identity","identity":{"did":"did:plc:…","handle":"alice.test"}}
//	{"id":3,"type":"account","account":{"did":"did:plc:…","active":false,"status":"deactivated"}}
//	{"id":4,"type":"repo","repo":{"did":"did:plc:…","state":"error","error":"fetch: …"}}
//
// A repo event tells that the repo's backfill or resync failed (state
// "error"; it is retried later, and a later success shows as the repo's
// events and state, with no repo event).
// A delete has neither "cid" nor "record"; an empty handle or status is
// left out. The record value is transcoded from DAG-CBOR to the atproto
// JSON form directly, without an intermediate tree: links become
// {"$link":"…"}, byte strings {"$bytes":"…"} (unpadded base64), and object
// keys keep their DAG-CBOR order. On error dst is returned unextended.
func AppendEventJSON(dst []byte, ev *store.Event) ([]byte, error) {
	orig := len(dst)
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, ev.ID, 10)
	switch ev.Kind {
	case store.KindRecord:
		dst = append(dst, `,"type":"record","record":{"live":`...)
		dst = strconv.AppendBool(dst, ev.Live)
		dst = append(dst, `,"did":`...)
		dst = appendString(dst, ev.DID)
		dst = append(dst, `,"rev":`...)
		dst = appendString(dst, ev.Rev)
		dst = append(dst, `,"collection":`...)
		dst = appendString(dst, ev.Collection)
		dst = append(dst, `,"rkey":`...)
		dst = appendString(dst, ev.RKey)
		dst = append(dst, `,"action":"`...)
		dst = append(dst, ev.Action.String()...)
		dst = append(dst, '"')
		if ev.Action != store.ActionDelete {
			if len(ev.CID) > 0 {
				var err error
				dst = append(dst, `,"cid":"`...)
				if dst, err = appendCID(dst, ev.CID); err != nil {
					return dst[:orig], fmt.Errorf("stream: event %d: cid: %w", ev.ID, err)
				}
				dst = append(dst, '"')
			}
			if len(ev.Record) > 0 {
				dst = append(dst, `,"record":`...)
				r := cborReader{b: ev.Record}
				var err error
				if dst, err = r.object(dst); err != nil {
					return dst[:orig], fmt.Errorf("stream: event %d: %w: %w", ev.ID, ErrInvalidRecord, err)
				}
			}
		}
		dst = append(dst, "}}"...)
	case store.KindIdentity:
		dst = append(dst, `,"type":"identity","identity":{"did":`...)
		dst = appendString(dst, ev.DID)
		if ev.Handle != "" {
			dst = append(dst, `,"handle":`...)
			dst = appendString(dst, ev.Handle)
		}
		dst = append(dst, "}}"...)
	case store.KindAccount:
		dst = append(dst, `,"type":"account","account":{"did":`...)
		dst = appendString(dst, ev.DID)
		dst = append(dst, `,"active":`...)
		dst = strconv.AppendBool(dst, ev.Active)
		if ev.Status != "" {
			dst = append(dst, `,"status":`...)
			dst = appendString(dst, ev.Status)
		}
		dst = append(dst, "}}"...)
	case store.KindRepo:
		dst = append(dst, `,"type":"repo","repo":{"did":`...)
		dst = appendString(dst, ev.DID)
		dst = append(dst, `,"state":`...)
		dst = appendString(dst, ev.Status)
		if ev.Error != "" {
			dst = append(dst, `,"error":`...)
			dst = appendString(dst, ev.Error)
		}
		dst = append(dst, "}}"...)
	default:
		return dst[:orig], fmt.Errorf("stream: event %d: unknown kind %v", ev.ID, ev.Kind)
	}
	return dst, nil
}

// AppendNoticeJSON appends the JSON form of a notice:
//
//	{"type":"info","info":{"name":"OutdatedCursor","message":"…"}}
func AppendNoticeJSON(dst []byte, n Notice) []byte {
	dst = append(dst, `{"type":"info","info":{"name":`...)
	dst = appendString(dst, n.Name)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, n.Message)
	return append(dst, "}}"...)
}

// AppendErrorJSON appends the JSON form of an error frame:
//
//	{"type":"error","error":"OutdatedCursor","message":"…"}
func AppendErrorJSON(dst []byte, name, message string) []byte {
	dst = append(dst, `{"type":"error","error":`...)
	dst = appendString(dst, name)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, message)
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does; U+2028 and U+2029 are escaped.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

var base32Lower = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// appendCID appends the string form of a binary CID: base32 ("b…") for
// CIDv1, base58 ("Qm…") for CIDv0.
func appendCID(dst, b []byte) ([]byte, error) {
	c, err := cid.Cast(b)
	if err != nil {
		return dst, err
	}
	if c.Version() == 0 {
		return append(dst, c.String()...), nil
	}
	dst = append(dst, 'b')
	return base32Lower.AppendEncode(dst, b), nil
}

// Limits of the transcoder, as in the atproto data model.
const (
	maxDepth        = 128
	maxContainerLen = 128 * 1024
)

// cborReader transcodes DAG-CBOR to atproto JSON.
type cborReader struct {
	b     []byte
	i     int
	depth int
}

var errTruncated = errors.New("truncated CBOR")

// head reads an item head: major type, additional info and argument.
func (r *cborReader) head() (major byte, info byte, arg uint64, err error) {
	if r.i >= len(r.b) {
		return 0, 0, 0, errTruncated
	}
	c := r.b[r.i]
	r.i++
	major, info = c>>5, c&0x1f
	switch {
	case info < 24:
		return major, info, uint64(info), nil
	case info == 24:
		if r.i+1 > len(r.b) {
			return 0, 0, 0, errTruncated
		}
		arg = uint64(r.b[r.i])
		r.i++
		if arg < 24 && major != 7 {
			return 0, 0, 0, errors.New("non-minimal integer encoding")
		}
	case info == 25:
		if r.i+2 > len(r.b) {
			return 0, 0, 0, errTruncated
		}
		arg = uint64(binary.BigEndian.Uint16(r.b[r.i:]))
		r.i += 2
	case info == 26:
		if r.i+4 > len(r.b) {
			return 0, 0, 0, errTruncated
		}
		arg = uint64(binary.BigEndian.Uint32(r.b[r.i:]))
		r.i += 4
	case info == 27:
		if r.i+8 > len(r.b) {
			return 0, 0, 0, errTruncated
		}
		arg = binary.BigEndian.Uint64(r.b[r.i:])
		r.i += 8
	default:
		return 0, 0, 0, fmt.Errorf("indefinite length or reserved additional info %d", info)
	}
	return major, info, arg, nil
}

// bytesArg returns the n bytes after the head.
func (r *cborReader) take(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.i) {
		return nil, errTruncated
	}
	b := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return b, nil
}

// object transcodes a whole record: one map and nothing after it.
func (r *cborReader) object(dst []byte) ([]byte, error) {
	if len(r.b) == 0 || r.b[0]>>5 != 5 {
		return dst, errors.New("record is not a map")
	}
	dst, err := r.value(dst)
	if err != nil {
		return dst, err
	}
	if r.i != len(r.b) {
		return dst, fmt.Errorf("%d bytes after the record", len(r.b)-r.i)
	}
	return dst, nil
}

func (r *cborReader) value(dst []byte) ([]byte, error) {
	major, info, arg, err := r.head()
	if err != nil {
		return dst, err
	}
	switch major {
	case 0:
		if arg > math.MaxInt64 {
			return dst, errors.New("integer out of range")
		}
		return strconv.AppendUint(dst, arg, 10), nil
	case 1:
		if arg > math.MaxInt64 {
			return dst, errors.New("integer out of range")
		}
		return strconv.AppendInt(dst, -1-int64(arg), 10), nil
	case 2:
		b, err := r.take(arg)
		if err != nil {
			return dst, err
		}
		dst = append(dst, `{"$bytes":"`...)
		dst = base64.RawStdEncoding.AppendEncode(dst, b)
		return append(dst, `"}`...), nil
	case 3:
		b, err := r.take(arg)
		if err != nil {
			return dst, err
		}
		if !utf8.Valid(b) {
			return dst, errors.New("text string is not valid UTF-8")
		}
		return appendString(dst, string(b)), nil
	case 4:
		if arg > maxContainerLen {
			return dst, fmt.Errorf("array of %d items is too long", arg)
		}
		if r.depth++; r.depth > maxDepth {
			return dst, errors.New("nesting too deep")
		}
		dst = append(dst, '[')
		for j := uint64(0); j < arg; j++ {
			if j > 0 {
				dst = append(dst, ',')
			}
			if dst, err = r.value(dst); err != nil {
				return dst, err
			}
		}
		r.depth--
		return append(dst, ']'), nil
	case 5:
		if arg > maxContainerLen {
			return dst, fmt.Errorf("map of %d entries is too long", arg)
		}
		if r.depth++; r.depth > maxDepth {
			return dst, errors.New("nesting too deep")
		}
		dst = append(dst, '{')
		for j := uint64(0); j < arg; j++ {
			if j > 0 {
				dst = append(dst, ',')
			}
			kmajor, _, klen, err := r.head()
			if err != nil {
				return dst, err
			}
			if kmajor != 3 {
				return dst, errors.New("map key is not a text string")
			}
			k, err := r.take(klen)
			if err != nil {
				return dst, err
			}
			if !utf8.Valid(k) {
				return dst, errors.New("map key is not valid UTF-8")
			}
			dst = appendString(dst, string(k))
			dst = append(dst, ':')
			if dst, err = r.value(dst); err != nil {
				return dst, err
			}
		}
		r.depth--
		return append(dst, '}'), nil
	case 6:
		if arg != 42 {
			return dst, fmt.Errorf("unsupported tag %d", arg)
		}
		bmajor, _, blen, err := r.head()
		if err != nil {
			return dst, err
		}
		if bmajor != 2 {
			return dst, errors.New("link is not a byte string")
		}
		b, err := r.take(blen)
		if err != nil {
			return dst, err
		}
		if len(b) < 2 || b[0] != 0 {
			return dst, errors.New("link lacks the identity multibase prefix")
		}
		dst = append(dst, `{"$link":"`...)
		if dst, err = appendCID(dst, b[1:]); err != nil {
			return dst, fmt.Errorf("link: %w", err)
		}
		return append(dst, `"}`...), nil
	case 7:
		switch info {
		case 20:
			return append(dst, "false"...), nil
		case 21:
			return append(dst, "true"...), nil
		case 22:
			return append(dst, "null"...), nil
		case 25, 26, 27:
			var f float64
			switch info {
			case 25:
				return dst, errors.New("half-precision float")
			case 26:
				f = float64(math.Float32frombits(uint32(arg)))
			case 27:
				f = math.Float64frombits(arg)
			}
			// The atproto data model has no floats; like atdata, accept
			// those that are integers.
			if f != math.Trunc(f) || math.IsInf(f, 0) || f < math.MinInt64 || f >= math.MaxInt64 {
				return dst, fmt.Errorf("float %v is not an integer", f)
			}
			return strconv.AppendInt(dst, int64(f), 10), nil
		}
		return dst, fmt.Errorf("unsupported simple value %d", info)
	}
	return dst, fmt.Errorf("unknown major type %d", major)
}

// AppendRecordJSON appends the atproto JSON form of a DAG-CBOR record value
// (one map), as AppendEventJSON renders it, and returns the extended
// buffer. An invalid value returns an error wrapping ErrInvalidRecord and
// dst unextended.
func AppendRecordJSON(dst, record []byte) ([]byte, error) {
	orig := len(dst)
	r := cborReader{b: record}
	dst, err := r.object(dst)
	if err != nil {
		return dst[:orig], fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return dst, nil
}

// AppendJSONString appends s as a JSON string, escaped as AppendEventJSON
// escapes strings (invalid UTF-8 becomes U+FFFD).
func AppendJSONString(dst []byte, s string) []byte { return appendString(dst, s) }

// AppendCID appends the string form of a binary CID ("b…" base32 for
// CIDv1, "Qm…" for CIDv0), or returns an error and dst unextended when cid
// is not a CID.
func AppendCID(dst, cid []byte) ([]byte, error) { return appendCID(dst, cid) }
