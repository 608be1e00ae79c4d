package testnet

import (
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
)

// Record is one record of a repo as testnet holds it.
type Record struct {
	// Collection is the record's NSID, for example "app.bsky.feed.post".
	Collection string
	// RKey is the record key.
	RKey string
	// CID is the CID of Value (dag-cbor, sha2-256).
	CID cid.Cid
	// Value is the record as DAG-CBOR bytes.
	Value []byte
}

// Path returns the record's MST key, "collection/rkey".
func (r Record) Path() string { return r.Collection + "/" + r.RKey }

// Action is what an operation does to a record.
type Action string

// The record actions, spelled as on the firehose.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// Op is one record write, applied with others in one commit by
// Account.Apply. Build it with Create, Update or Delete.
type Op struct {
	Action     Action
	Collection string
	// RKey is the record key. Empty on a create means a fresh TID.
	RKey string
	// Value is the record as DAG-CBOR (a map), for creates and updates.
	Value []byte
}

// Create returns an op that creates a record. An empty rkey is replaced by
// a fresh TID when the op is applied.
func Create(collection, rkey string, value []byte) Op {
	return Op{Action: ActionCreate, Collection: collection, RKey: rkey, Value: value}
}

// Update returns an op that replaces the value of an existing record.
func Update(collection, rkey string, value []byte) Op {
	return Op{Action: ActionUpdate, Collection: collection, RKey: rkey, Value: value}
}

// Delete returns an op that removes an existing record.
func Delete(collection, rkey string) Op {
	return Op{Action: ActionDelete, Collection: collection, RKey: rkey}
}

// Post returns a typical record, {"$type": collection, "text": text,
// "createdAt": now}, as DAG-CBOR.
func Post(collection, text string) []byte {
	return postCBOR(nil, collection, text, time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
}

// Value encodes an atproto data value (a map as produced by
// atdata.UnmarshalJSON, or plain Go strings, numbers, bools, maps and
// slices) as DAG-CBOR.
func Value(m map[string]any) ([]byte, error) {
	b, err := atdata.MarshalCBOR(m)
	if err != nil {
		return nil, fmt.Errorf("testnet: encode record: %w", err)
	}
	return b, nil
}

// RecordOp is one op of an applied commit, as it appears on the firehose.
type RecordOp struct {
	Action     Action
	Collection string
	RKey       string
	// CID is the new record CID; cid.Undef for deletes.
	CID cid.Cid
	// Prev is the record CID before the op; cid.Undef for creates.
	Prev cid.Cid
}

// Path returns the op's MST key, "collection/rkey".
func (o RecordOp) Path() string { return o.Collection + "/" + o.RKey }
