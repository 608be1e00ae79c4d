package cistern

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// ErrRecordNotFound is returned by GetRecord for an absent record.
var ErrRecordNotFound = errors.New("cistern: record not found")

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

func parseCollection(s string) (string, error) {
	n, err := syntax.ParseNSID(s)
	if err != nil {
		return "", invalidArg(err, "invalid collection %q", s)
	}
	return n.String(), nil
}

func parseRKey(s string) (string, error) {
	k, err := syntax.ParseRecordKey(s)
	if err != nil {
		return "", invalidArg(err, "invalid record key %q", s)
	}
	return k.String(), nil
}

// GetRecord returns one record, or an error wrapping ErrRecordNotFound
// (and also ErrNotTracked when the indexer does not know the repo at all:
// not tracked, nothing stored). repo is a DID or the handle of a tracked
// repo, as in the HTTP API. Invalid DIDs, handles, collections and record
// keys are refused (ErrInvalidArgument); after Close it fails with
// ErrClosed.
func (ix *Indexer) GetRecord(ctx context.Context, repo, collection, rkey string) (*Record, error) {
	did, err := ix.repoDID(ctx, repo)
	if err != nil {
		return nil, err
	}
	if collection, err = parseCollection(collection); err != nil {
		return nil, err
	}
	if rkey, err = parseRKey(rkey); err != nil {
		return nil, err
	}
	var out *Record
	err = ix.view(ctx, func(tx store.ReadTx) error {
		r, err := tx.Record(did, collection, rkey)
		if errors.Is(err, store.ErrNotFound) {
			if known, err := knownRepo(tx, did); err != nil {
				return err
			} else if !known {
				return fmt.Errorf("%w: at://%s/%s/%s: %w: %s", ErrRecordNotFound, did, collection, rkey, ErrNotTracked, did)
			}
			return fmt.Errorf("%w: at://%s/%s/%s", ErrRecordNotFound, did, collection, rkey)
		}
		if err != nil {
			return err
		}
		out, err = recordOf(r)
		return err
	})
	return out, err
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

func (o *ListOptions) check() error {
	if o.Limit == 0 {
		o.Limit = 50
	}
	if o.Limit < 1 || o.Limit > 100 {
		return invalidArg(nil, "limit %d is outside 1..100", o.Limit)
	}
	return nil
}

// ListRecords lists the records of one collection of a repo. repo is a DID
// or the handle of a tracked repo, as in the HTTP API. A repo the indexer
// does not know (not tracked, nothing stored) is an error wrapping
// ErrNotTracked, as the HTTP API's "Could not find repo"; a known repo
// without records in collection gives an empty page. After Close it fails
// with ErrClosed.
func (ix *Indexer) ListRecords(ctx context.Context, repo, collection string, opts ListOptions) (*RecordPage, error) {
	did, err := ix.repoDID(ctx, repo)
	if err != nil {
		return nil, err
	}
	if collection, err = parseCollection(collection); err != nil {
		return nil, err
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.Cursor != "" {
		if _, err := parseRKey(opts.Cursor); err != nil {
			return nil, fmt.Errorf("%w (as cursor)", err)
		}
	}
	page := &RecordPage{}
	err = ix.view(ctx, func(tx store.ReadTx) error {
		q := store.RecordScan{DID: did, Collection: collection, After: opts.Cursor, Reverse: !opts.Reverse, WithValues: true}
		err := tx.ScanRecords(q, func(r *store.Record) (bool, error) {
			rec, err := recordOf(r)
			if err != nil {
				return false, err
			}
			page.Records = append(page.Records, rec)
			return len(page.Records) < opts.Limit+1, nil
		})
		if err != nil || len(page.Records) > 0 {
			return err
		}
		if known, err := knownRepo(tx, did); err != nil {
			return err
		} else if !known {
			return fmt.Errorf("%w: %s", ErrNotTracked, did)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(page.Records) > opts.Limit {
		page.Records = page.Records[:opts.Limit]
		page.Cursor = page.Records[opts.Limit-1].RKey
	}
	return page, nil
}

// CountRecords counts a repo's records, of one collection if collection is
// not empty: 0 for a repo the indexer does not know. repo is a DID or the
// handle of a tracked repo.
func (ix *Indexer) CountRecords(ctx context.Context, repo, collection string) (int64, error) {
	did, err := ix.repoDID(ctx, repo)
	if err != nil {
		return 0, err
	}
	if collection != "" {
		if collection, err = parseCollection(collection); err != nil {
			return 0, err
		}
	}
	var n int64
	err = ix.view(ctx, func(tx store.ReadTx) error {
		n, err = tx.CountRecords(did, collection)
		return err
	})
	return n, err
}

// CollectionCounts returns the number of records per collection of a repo.
// repo is a DID or the handle of a tracked repo.
func (ix *Indexer) CollectionCounts(ctx context.Context, repo string) (map[string]int64, error) {
	did, err := ix.repoDID(ctx, repo)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	err = ix.view(ctx, func(tx store.ReadTx) error {
		colls, err := tx.Collections(did)
		if err != nil {
			return err
		}
		for _, c := range colls {
			n, err := tx.CountRecords(did, c)
			if err != nil {
				return err
			}
			out[c] = n
		}
		return nil
	})
	return out, err
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
	collection, err := parseCollection(collection)
	if err != nil {
		return nil, err
	}
	o := ListOptions{Limit: limit}
	if err := o.check(); err != nil {
		return nil, err
	}
	page := &CollectionPage{}
	err = ix.view(ctx, func(tx store.ReadTx) error {
		return tx.ScanCollection(collection, cursor, func(r *store.Record) (bool, error) {
			rec, err := recordOf(r)
			if err != nil {
				return false, err
			}
			page.Records = append(page.Records, rec)
			return len(page.Records) < o.Limit+1, nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(page.Records) > o.Limit {
		page.Records = page.Records[:o.Limit]
		page.Cursor = page.Records[o.Limit-1].Seq
	}
	return page, nil
}
