// Package query answers the Indexer's read queries: records, collections,
// repos, handles and DID documents.
//
// It checks each argument (a DID, handle, collection, record key, limit or
// cursor that does not parse is an error wrapping ErrInvalidArgument, naming
// the value) and reads the store through the View it is given, which is the
// root package's, so that a query after Close fails as every method of the
// Indexer does. It writes nothing. The root package keeps the public methods,
// their types and their documentation, and calls in here; its
// ErrInvalidArgument, ErrNotTracked and ErrRecordNotFound are this package's
// errors.
package query

import (
	"context"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// The errors a caller branches on, exported again by the root package.
var (
	ErrNotTracked      = errors.New("cistern: repo not tracked")
	ErrInvalidArgument = errors.New("cistern: invalid argument")
	ErrRecordNotFound  = errors.New("cistern: record not found")
)

// Reader answers the queries.
type Reader struct {
	// View runs fn in a read transaction.
	View func(ctx context.Context, fn func(tx store.ReadTx) error) error
	// Resolver answers DIDDocument.
	Resolver resolver.Resolver
}

// Record returns one record of repo (a DID, or the handle of a tracked
// repo), or an error wrapping ErrRecordNotFound, and also ErrNotTracked
// when the indexer does not know the repo at all.
func (q *Reader) Record(ctx context.Context, repo, collection, rkey string) (*store.Record, error) {
	did, err := q.RepoDID(ctx, repo)
	if err != nil {
		return nil, err
	}
	if collection, err = ParseCollection(collection); err != nil {
		return nil, err
	}
	if rkey, err = ParseRKey(rkey); err != nil {
		return nil, err
	}
	var out *store.Record
	err = q.View(ctx, func(tx store.ReadTx) error {
		out, err = tx.Record(did, collection, rkey)
		if errors.Is(err, store.ErrNotFound) {
			if known, err := knownRepo(tx, did); err != nil {
				return err
			} else if !known {
				return fmt.Errorf("%w: at://%s/%s/%s: %w: %s", ErrRecordNotFound, did, collection, rkey, ErrNotTracked, did)
			}
			return fmt.Errorf("%w: at://%s/%s/%s", ErrRecordNotFound, did, collection, rkey)
		}
		return err
	})
	return out, err
}

// Records lists a page of the records of one collection of repo, in
// descending record key order unless ascending, after the record key
// cursor; limit is 1 to 100, 0 for 50. It returns the next page's cursor,
// "" at the end. A repo the indexer does not know is an error wrapping
// ErrNotTracked; a known repo without records in collection an empty page.
func (q *Reader) Records(ctx context.Context, repo, collection, cursor string, ascending bool, limit int) ([]*store.Record, string, error) {
	did, err := q.RepoDID(ctx, repo)
	if err != nil {
		return nil, "", err
	}
	if collection, err = ParseCollection(collection); err != nil {
		return nil, "", err
	}
	if limit, err = Limit(limit); err != nil {
		return nil, "", err
	}
	if cursor != "" {
		if _, err := ParseRKey(cursor); err != nil {
			return nil, "", fmt.Errorf("%w (as cursor)", err)
		}
	}
	var recs []*store.Record
	err = q.View(ctx, func(tx store.ReadTx) error {
		scan := store.RecordScan{DID: did, Collection: collection, After: cursor, Reverse: !ascending, WithValues: true}
		err := tx.ScanRecords(scan, func(r *store.Record) (bool, error) {
			recs = append(recs, r)
			return len(recs) < limit+1, nil
		})
		if err != nil || len(recs) > 0 {
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
		return nil, "", err
	}
	if len(recs) > limit {
		recs = recs[:limit]
		return recs, recs[limit-1].RKey, nil
	}
	return recs, "", nil
}

// Count counts repo's records, of one collection if collection is not
// empty: 0 for a repo the indexer does not know.
func (q *Reader) Count(ctx context.Context, repo, collection string) (int64, error) {
	did, err := q.RepoDID(ctx, repo)
	if err != nil {
		return 0, err
	}
	if collection != "" {
		if collection, err = ParseCollection(collection); err != nil {
			return 0, err
		}
	}
	var n int64
	err = q.View(ctx, func(tx store.ReadTx) error {
		n, err = tx.CountRecords(did, collection)
		return err
	})
	return n, err
}

// CollectionCounts returns the number of records per collection of repo.
func (q *Reader) CollectionCounts(ctx context.Context, repo string) (map[string]int64, error) {
	did, err := q.RepoDID(ctx, repo)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	err = q.View(ctx, func(tx store.ReadTx) error {
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

// Collection lists a page of the records of one collection across all
// repos, most recently indexed first, after cursor (a Seq; 0 for the
// first page); limit is 1 to 100, 0 for 50. It returns the next page's
// cursor, 0 at the end.
func (q *Reader) Collection(ctx context.Context, collection string, cursor uint64, limit int) ([]*store.Record, uint64, error) {
	collection, err := ParseCollection(collection)
	if err != nil {
		return nil, 0, err
	}
	if limit, err = Limit(limit); err != nil {
		return nil, 0, err
	}
	var recs []*store.Record
	err = q.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanCollection(collection, cursor, func(r *store.Record) (bool, error) {
			recs = append(recs, r)
			return len(recs) < limit+1, nil
		})
	})
	if err != nil {
		return nil, 0, err
	}
	if len(recs) > limit {
		recs = recs[:limit]
		return recs, recs[limit-1].Seq, nil
	}
	return recs, 0, nil
}

// Repo returns the state of repo and its number of records, or an error
// wrapping ErrNotTracked.
func (q *Reader) Repo(ctx context.Context, repo string) (*store.Repo, int64, error) {
	did, err := q.RepoDID(ctx, repo)
	if err != nil {
		return nil, 0, err
	}
	var (
		r *store.Repo
		n int64
	)
	err = q.View(ctx, func(tx store.ReadTx) error {
		r, err = tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: %s", ErrNotTracked, did)
		}
		if err != nil {
			return err
		}
		n, err = tx.CountRecords(did, "")
		return err
	})
	return r, n, err
}

// Repos lists a page of tracked repos in DID order, after the DID cursor,
// of the given state only when it is not zero; limit is at most 1000, 0 for
// 100. It returns the next page's cursor, "" at the end.
func (q *Reader) Repos(ctx context.Context, state store.RepoState, cursor string, limit int) ([]store.Repo, string, error) {
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		return nil, "", InvalidArg(nil, "limit %d is above 1000", limit)
	}
	if cursor != "" {
		if _, err := ParseDID(cursor); err != nil {
			return nil, "", fmt.Errorf("%w (as cursor)", err)
		}
	}
	var out []store.Repo
	err := q.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanRepos(cursor, func(r *store.Repo) (bool, error) {
			if state != 0 && r.State != state {
				return true, nil
			}
			out = append(out, *r)
			return len(out) < limit+1, nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	if len(out) > limit {
		out = out[:limit]
		return out, out[limit-1].DID, nil
	}
	return out, "", nil
}

// RepoDID turns the repo argument of a query into a DID: a DID as it is
// (normalized), or the handle of a tracked repo, looked up as LookupHandle
// does. A handle no tracked repo holds gives an error wrapping
// ErrNotTracked; a string that is neither one wrapping ErrInvalidArgument.
func (q *Reader) RepoDID(ctx context.Context, repo string) (string, error) {
	id, err := syntax.ParseAtIdentifier(repo)
	if err != nil {
		return "", InvalidArg(err, "invalid DID or handle %q", repo)
	}
	if d, err := id.AsDID(); err == nil {
		return d.String(), nil
	}
	h, _ := id.AsHandle()
	return q.LookupHandle(ctx, h.String())
}

// LookupHandle returns the DID of the tracked repo whose last resolved
// handle is h (compared without case), or an error wrapping ErrNotTracked,
// from the store's handle index alone.
func (q *Reader) LookupHandle(ctx context.Context, h string) (string, error) {
	hdl, err := syntax.ParseHandle(h)
	if err != nil {
		return "", InvalidArg(err, "invalid handle %q", h)
	}
	want := hdl.Normalize().String()
	var did string
	err = q.View(ctx, func(tx store.ReadTx) error {
		r, err := tx.RepoByHandle(want)
		if err == nil && r.State != store.StateDeleted {
			did = r.DID
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if did == "" {
		return "", fmt.Errorf("%w: no tracked repo has handle %s", ErrNotTracked, want)
	}
	return did, nil
}

// knownRepo reports whether the indexer knows did: it is tracked, or it
// still has records stored (untracked without deleting its data).
func knownRepo(tx store.ReadTx, did string) (bool, error) {
	_, err := tx.Repo(did)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	n, err := tx.CountRecords(did, "")
	return n > 0, err
}
