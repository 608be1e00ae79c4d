package cistern

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/internal/query"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// ErrRecordNotFound is returned by GetRecord for an absent record.
var ErrRecordNotFound = query.ErrRecordNotFound

// Record is one stored record.
type Record struct {
	DID        string
	Collection string
	RKey       string
	CID        cid.Cid
	// Rev is the repo rev at which the record was last written.
	Rev string
	// Value is the record as DAG-CBOR.
	Value []byte
	// Seq orders records by when they were indexed (ListCollection's cursor).
	Seq uint64
}

// URI returns the record's at:// URI.
func (r *Record) URI() string {
	return "at://" + r.DID + "/" + r.Collection + "/" + r.RKey
}

// JSON returns the record value in atproto JSON (links as {"$link"},
// bytes as {"$bytes"}).
func (r *Record) JSON() (json.RawMessage, error) {
	return ValueJSON(r.Value)
}

// ValueJSON converts a DAG-CBOR record value to atproto JSON. Object keys
// keep their DAG-CBOR order, as a PDS writes them ({"text","$type",
// "createdAt"}), and the value is checked against the atproto data model
// first.
func ValueJSON(cbor []byte) (json.RawMessage, error) {
	if _, err := atdata.UnmarshalCBOR(cbor); err != nil {
		return nil, fmt.Errorf("cistern: decode record value: %w", err)
	}
	out, err := stream.AppendValueJSON(make([]byte, 0, 2*len(cbor)), cbor)
	if err != nil {
		return nil, fmt.Errorf("cistern: decode record value: %w", err)
	}
	return out, nil
}

func recordOf(r *store.Record) (*Record, error) {
	c, err := cid.Cast(r.CID)
	if err != nil {
		return nil, fmt.Errorf("cistern: stored CID of %s/%s/%s: %w", r.DID, r.Collection, r.RKey, err)
	}
	return &Record{DID: r.DID, Collection: r.Collection, RKey: r.RKey, CID: c, Rev: r.Rev, Value: r.Value, Seq: r.Seq}, nil
}

func recordsOf(rs []*store.Record) ([]*Record, error) {
	out := make([]*Record, 0, len(rs))
	for _, r := range rs {
		rec, err := recordOf(r)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// GetRecord returns one record, or an error wrapping ErrRecordNotFound
// (and also ErrNotTracked when the indexer does not know the repo at all:
// not tracked, nothing stored). repo is a DID or the handle of a tracked
// repo, as in the HTTP API. Invalid DIDs, handles, collections and record
// keys are refused (ErrInvalidArgument); after Close it fails with
// ErrClosed.
func (ix *Indexer) GetRecord(ctx context.Context, repo, collection, rkey string) (*Record, error) {
	r, err := ix.q.Record(ctx, repo, collection, rkey)
	if err != nil {
		return nil, err
	}
	return recordOf(r)
}

// ListOptions select a page of records, with the semantics of
// com.atproto.repo.listRecords.
type ListOptions struct {
	// Limit bounds the page: 1 to 100, default 50.
	Limit int
	// Cursor is the record key the previous page ended with.
	Cursor string
	// Reverse lists in ascending record key order; the default is
	// descending (newest first for TID keys).
	Reverse bool
}

// RecordPage is one page of records; Cursor is "" when there are no more.
type RecordPage struct {
	Records []*Record
	Cursor  string
}

// ListRecords lists the records of one collection of a repo. repo is a DID
// or the handle of a tracked repo, as in the HTTP API. A repo the indexer
// does not know (not tracked, nothing stored) is an error wrapping
// ErrNotTracked, as the HTTP API's "Could not find repo"; a known repo
// without records in collection gives an empty page. After Close it fails
// with ErrClosed.
func (ix *Indexer) ListRecords(ctx context.Context, repo, collection string, opts ListOptions) (*RecordPage, error) {
	rs, cursor, err := ix.q.Records(ctx, repo, collection, opts.Cursor, opts.Reverse, opts.Limit)
	if err != nil {
		return nil, err
	}
	recs, err := recordsOf(rs)
	if err != nil {
		return nil, err
	}
	return &RecordPage{Records: recs, Cursor: cursor}, nil
}

// CountRecords counts a repo's records, of one collection if collection is
// not empty: 0 for a repo the indexer does not know. repo is a DID or the
// handle of a tracked repo.
func (ix *Indexer) CountRecords(ctx context.Context, repo, collection string) (int64, error) {
	return ix.q.Count(ctx, repo, collection)
}

// CollectionCounts returns the number of records per collection of a repo.
// repo is a DID or the handle of a tracked repo.
func (ix *Indexer) CollectionCounts(ctx context.Context, repo string) (map[string]int64, error) {
	return ix.q.CollectionCounts(ctx, repo)
}

// CollectionPage is one page of ListCollection; Cursor is 0 at the end.
type CollectionPage struct {
	Records []*Record
	Cursor  uint64
}

// ListCollection lists the records of one collection across all repos, most
// recently indexed first. cursor is the previous page's Cursor (0 for the
// first page); limit is 1 to 100, default 50.
func (ix *Indexer) ListCollection(ctx context.Context, collection string, cursor uint64, limit int) (*CollectionPage, error) {
	rs, next, err := ix.q.Collection(ctx, collection, cursor, limit)
	if err != nil {
		return nil, err
	}
	recs, err := recordsOf(rs)
	if err != nil {
		return nil, err
	}
	return &CollectionPage{Records: recs, Cursor: next}, nil
}
