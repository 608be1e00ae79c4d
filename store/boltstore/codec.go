package boltstore

import (
	"github.com/fxamacker/cbor/v2"
)

// codecs returns the CBOR modes a DB encodes and decodes values with: core
// deterministic encoding, times as RFC 3339 strings in UTC with nanoseconds
// (exact round trips), and decoding that ignores unknown fields so that new
// fields can be added under new keys.
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

// recordValue is what the records bucket holds for one record.
type recordValue struct {
	CID []byte `cbor:"1,keyasint"`
	Rev string `cbor:"2,keyasint,omitempty"`
	Seq uint64 `cbor:"3,keyasint"`
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
	State uint8 `cbor:"2,keyasint"`
}

// eventRef decodes only what pruning needs of an encoded store.Event.
type eventRef struct {
	Kind uint8  `cbor:"1,keyasint"`
	CID  []byte `cbor:"9,keyasint"`
}
