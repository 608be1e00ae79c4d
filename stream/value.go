package stream

import "fmt"

// AppendValueJSON appends the atproto JSON form of a DAG-CBOR record value
// (a map) to dst, as AppendEventJSON renders the "record" of an event:
// object keys in their DAG-CBOR order, which is the order in which a PDS
// writes the record's JSON; links as {"$link":"…"}, byte strings as
// {"$bytes":"…"}. On error, which wraps ErrInvalidRecord, dst is returned
// unextended.
func AppendValueJSON(dst, value []byte) ([]byte, error) {
	orig := len(dst)
	r := cborReader{b: value}
	dst, err := r.object(dst)
	if err != nil {
		return dst[:orig], fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return dst, nil
}
