package boltstore

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// maxField is the longest string a length prefix can hold.
const maxField = math.MaxUint16

// appendLP appends s prefixed with its length as 2 bytes big-endian.
func appendLP(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// checkField refuses an empty or overlong key field.
func checkField(name, s string) error {
	if s == "" {
		return fmt.Errorf("boltstore: empty %s", name)
	}
	if len(s) > maxField {
		return fmt.Errorf("boltstore: %s is %d bytes, longer than %d", name, len(s), maxField)
	}
	return nil
}

// didPrefix is lp(did), the start of every key of one repo.
func didPrefix(did string) []byte {
	return appendLP(make([]byte, 0, 2+len(did)), did)
}

// idLen is the width of a repo id in keys.
const idLen = 4

// appendID appends a repo id, 4 bytes big-endian.
func appendID(dst []byte, id uint32) []byte {
	return binary.BigEndian.AppendUint32(dst, id)
}

// appendRecordKey appends id | collection "/" rkey.
func appendRecordKey(k []byte, id uint32, collection, rkey string) []byte {
	k = appendID(k, id)
	k = append(k, collection...)
	k = append(k, '/')
	return append(k, rkey...)
}

// appendCollKey appends id | collection, the key of a per-repo collection
// count.
func appendCollKey(k []byte, id uint32, collection string) []byte {
	return append(appendID(k, id), collection...)
}

// appendByCollKey appends collection id | seq.
func appendByCollKey(k []byte, collID uint32, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendID(k, collID), seq)
}

// appendByCollValue appends id | rkey.
func appendByCollValue(v []byte, id uint32, rkey string) []byte {
	return append(appendID(v, id), rkey...)
}

// appendBlockKey appends id | cid, the key of a block.
func appendBlockKey(dst []byte, id uint32, cid []byte) []byte {
	return append(appendID(dst, id), cid...)
}

// bufferKey is lp(did) | rev.
func bufferKey(did, rev string) []byte {
	k := make([]byte, 0, 2+len(did)+len(rev))
	k = appendLP(k, did)
	return append(k, rev...)
}

// timeKeyLen is the width of an encoded time.
const timeKeyLen = 12

// appendTime appends t so that encoded times compare as bytes in time
// order, over the whole range of time.Time: the Unix seconds with the sign
// bit flipped (8 bytes), then the nanoseconds (4 bytes).
func appendTime(dst []byte, t time.Time) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(dst, uint32(t.Nanosecond()))
}

// parseTime decodes a time written by appendTime, in UTC.
func parseTime(b []byte) time.Time {
	sec := int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
	nsec := int64(binary.BigEndian.Uint32(b[8:]))
	return time.Unix(sec, nsec).UTC()
}

// queueKey is due | did.
func queueKey(due []byte, did string) []byte {
	k := make([]byte, 0, len(due)+len(did))
	k = append(k, due...)
	return append(k, did...)
}

// u64 encodes v as 8 bytes big-endian.
func u64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// getU64 decodes 8 bytes big-endian, 0 for a missing or malformed value.
func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// prefixEnd returns the smallest key greater than every key starting with
// p, or nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
