package backlinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// MetaKey is the store metadata key holding the index's state (JSON).
const MetaKey = "backlinks"

// States of the index in a store.
const (
	// StateNone: no index was ever kept (or the store predates it).
	StateNone = ""
	// StateBuilding: the index is kept for new writes and is being built
	// from the records stored before; queries are refused until it is done.
	StateBuilding = "building"
	// StateReady: every stored record's links are indexed.
	StateReady = "ready"
	// StateStale: the index was kept, then the store was opened with it
	// off. What it holds may be out of date; it is not queried, and is
	// rebuilt when it is turned on again.
	StateStale = "stale"
)

// state is the JSON value under MetaKey.
type state struct {
	State string `json:"state"`
	// Building: the repo being visited and the last record key visited in
	// it; RepoDone once its records are all visited.
	DID      string `json:"did,omitempty"`
	Key      string `json:"key,omitempty"`
	RepoDone bool   `json:"repoDone,omitempty"`
	Done     int64  `json:"done,omitempty"`
	Total    int64  `json:"total,omitempty"`
}

func readState(tx store.ReadTx) (state, error) {
	var s state
	v, err := tx.Meta(MetaKey)
	if errors.Is(err, store.ErrNotFound) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(v, &s); err != nil {
		return s, fmt.Errorf("backlinks: state %q: %w", v, err)
	}
	return s, nil
}

func writeState(tx store.Tx, s state) error {
	v, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return tx.PutMeta(MetaKey, v)
}

// Options configure an Index. Zero values mean the defaults.
type Options struct {
	// Store holds the index (store.Tx.PutLinks and the ReadTx scans).
	Store store.Store
	// Write runs a closure in a write transaction: the one write path.
	// Nil for a read-only Index, which answers queries if the store's
	// index is ready and never writes.
	Write func(ctx context.Context, fn func(tx store.Tx) error) error
	// Enabled says the index is kept (Config.Backlinks). Default false.
	Enabled bool
	// BatchSize is how many records one transaction of the build visits.
	// Default 1000.
	BatchSize int
	// ProgressInterval is how often the build logs its progress.
	// Default 10 s.
	ProgressInterval time.Duration
	// Logger receives the build's progress. Default: discard.
	Logger *slog.Logger
}

// Index keeps the backlink index of a store and answers from it: Links
// extracts a record's links for the writer, Open records whether the index
// is kept, Build indexes the records stored before it was turned on, and
// Backlinks and Count answer queries once it is ready.
type Index struct {
	opts      Options
	malformed atomic.Int64
}

// New returns an Index. It does nothing until Open.
func New(opts Options) *Index {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Index{opts: opts}
}

// Links returns the links of a record's value for the writer
// (writer.Options.Links). A value that does not parse, or a record without
// its value, has no links and is counted (Status.Malformed).
func (x *Index) Links(r *store.Record) []store.Link {
	if r.Value == nil {
		x.malformed.Add(1)
		return nil
	}
	links, err := Extract(r.Value)
	if err != nil {
		x.malformed.Add(1)
		return nil
	}
	return links
}

// Open records in the store whether the index is kept: turned on, an index
// that is not ready starts building (Build); turned off, an index becomes
// stale, so that it is neither queried nor trusted when turned on again. A
// read-only Index does nothing.
func (x *Index) Open(ctx context.Context) error {
	if x.opts.Write == nil {
		return nil
	}
	err := x.opts.Write(ctx, func(tx store.Tx) error {
		s, err := readState(tx)
		if err != nil {
			return err
		}
		switch {
		case x.opts.Enabled && s.State != StateReady && s.State != StateBuilding:
			return writeState(tx, state{State: StateBuilding})
		case !x.opts.Enabled && s.State != StateNone && s.State != StateStale:
			return writeState(tx, state{State: StateStale})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("backlinks: open: %w", err)
	}
	return nil
}

// Build indexes the links of the records stored before the index was
// turned on, BatchSize records per transaction, and returns once the index
// is ready (at once if it is, or if it is off), or with ctx's error. Its
// position is saved in the store with each batch: after a crash or a
// cancel, the next Build resumes there. Records written meanwhile are
// indexed by the writer; a batch reads and indexes its records in one
// transaction, so it never overwrites their newer links.
func (x *Index) Build(ctx context.Context) error {
	if !x.opts.Enabled || x.opts.Write == nil {
		return nil
	}
	start, lastLog := time.Now(), time.Now()
	var startDone int64 = -1
	for {
		var s state
		err := x.opts.Write(ctx, func(tx store.Tx) error {
			var err error
			s, err = x.buildBatch(tx)
			return err
		})
		if err != nil {
			return fmt.Errorf("backlinks: build: %w", err)
		}
		if startDone < 0 {
			startDone = s.Done
			if s.State == StateBuilding {
				x.opts.Logger.Info("backlinks: building the index from the stored records", "done", s.Done, "records", s.Total)
			}
		}
		if s.State != StateBuilding {
			if startDone >= 0 && s.Done > 0 {
				x.opts.Logger.Info("backlinks: index built", "records", s.Done, "took", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if time.Since(lastLog) >= x.opts.ProgressInterval {
			lastLog = time.Now()
			rate := float64(s.Done-startDone) / time.Since(start).Seconds()
			args := []any{"done", s.Done, "records", s.Total, "perSecond", int64(rate)}
			if rate > 0 && s.Total > s.Done {
				args = append(args, "eta", (time.Duration(float64(s.Total-s.Done)/rate) * time.Second).Round(time.Second))
			}
			x.opts.Logger.Info("backlinks: building the index", args...)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// buildBatch visits up to BatchSize records from the saved position and
// saves the new one.
func (x *Index) buildBatch(tx store.Tx) (state, error) {
	s, err := readState(tx)
	if err != nil || s.State != StateBuilding {
		return s, err
	}
	if s.Total == 0 && s.Done == 0 {
		c, err := tx.Counts()
		if err != nil {
			return s, err
		}
		s.Total = c.Records
	}
	n := 0
	for n < x.opts.BatchSize {
		if s.DID == "" || s.RepoDone {
			next := ""
			err := tx.ScanRepos(s.DID, func(r *store.Repo) (bool, error) {
				next = r.DID
				return false, nil
			})
			if err != nil {
				return s, err
			}
			if next == "" {
				s = state{State: StateReady, Done: s.Done, Total: s.Total}
				return s, writeState(tx, s)
			}
			s.DID, s.Key, s.RepoDone = next, "", false
		}
		var recs []*store.Record
		want := x.opts.BatchSize - n
		err := tx.ScanRecords(store.RecordScan{DID: s.DID, After: s.Key, WithValues: true}, func(r *store.Record) (bool, error) {
			recs = append(recs, r)
			return len(recs) < want, nil
		})
		if err != nil {
			return s, err
		}
		for _, r := range recs {
			if err := tx.PutLinks(r.DID, r.Collection, r.RKey, r.Seq, x.Links(r)); err != nil {
				return s, err
			}
		}
		if len(recs) > 0 {
			last := recs[len(recs)-1]
			s.Key = last.Collection + "/" + last.RKey
		}
		if len(recs) < want {
			s.RepoDone = true
		}
		n += len(recs)
		s.Done += int64(len(recs))
	}
	return s, writeState(tx, s)
}

// checkReady refuses a query the index cannot answer yet.
func (x *Index) checkReady(tx store.ReadTx) error {
	if !x.opts.Enabled && x.opts.Write != nil {
		return ErrOff
	}
	s, err := readState(tx)
	if err != nil {
		return err
	}
	switch s.State {
	case StateReady:
		return nil
	case StateBuilding:
		return &BuildingError{Done: s.Done, Total: s.Total}
	}
	return ErrOff
}

// Page is one page of Backlinks.
type Page struct {
	// Total counts every record linking to the target from the source.
	Total int64
	// Links are the linking records, newest first.
	Links []store.Backlink
	// Cursor asks for the next page; "" on the last.
	Cursor string
}

// Backlinks returns the records linking to target (an at-uri or a DID)
// from source ("collection:path"), newest first, limit at a time (0:
// DefaultLimit; at most MaxLimit), starting after cursor ("" for the
// newest; a previous page's Cursor). Malformed input returns an
// *InputError naming it; an index that is off, ErrOff; one being built, a
// *BuildingError.
func (x *Index) Backlinks(ctx context.Context, target, source, cursor string, limit int) (*Page, error) {
	if err := ParseTarget(target); err != nil {
		return nil, err
	}
	collection, path, err := ParseSource(source)
	if err != nil {
		return nil, err
	}
	after, err := parseCursor(cursor)
	if err != nil {
		return nil, err
	}
	if limit, err = checkLimit(limit); err != nil {
		return nil, err
	}
	p := &Page{Links: []store.Backlink{}}
	err = x.opts.Store.View(ctx, func(tx store.ReadTx) error {
		if err := x.checkReady(tx); err != nil {
			return err
		}
		n, err := tx.CountBacklinks(target, collection, path)
		if err != nil {
			return err
		}
		p.Total = n.Records
		more := false
		err = tx.ScanBacklinks(store.BacklinkScan{Target: target, Collection: collection, Path: path, After: after},
			func(b *store.Backlink) (bool, error) {
				if len(p.Links) == limit {
					more = true
					return false, nil
				}
				p.Links = append(p.Links, *b)
				return true, nil
			})
		if more {
			p.Cursor = strconv.FormatUint(p.Links[len(p.Links)-1].Seq, 10)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Count counts the records, and the distinct DIDs, linking to target from
// source, with the errors of Backlinks.
func (x *Index) Count(ctx context.Context, target, source string) (store.BacklinkCount, error) {
	var n store.BacklinkCount
	if err := ParseTarget(target); err != nil {
		return n, err
	}
	collection, path, err := ParseSource(source)
	if err != nil {
		return n, err
	}
	err = x.opts.Store.View(ctx, func(tx store.ReadTx) error {
		if err := x.checkReady(tx); err != nil {
			return err
		}
		n, err = tx.CountBacklinks(target, collection, path)
		return err
	})
	return n, err
}

// Status is what Stats reports of the index.
type Status struct {
	// State is StateNone, StateBuilding, StateReady or StateStale.
	State string `json:"state"`
	// Enabled says the index is kept (Config.Backlinks).
	Enabled bool `json:"enabled"`
	// Done and Total count the records visited by the build, and those
	// stored when it began.
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Links counts the entries of the index (store.Counts.Links).
	Links int64 `json:"links"`
	// Malformed counts the records indexed without links since Open
	// because their value did not parse or was absent (a record written
	// in a transaction that was retried may count twice).
	Malformed int64 `json:"malformed"`
}

// Status reads the index's state from tx.
func (x *Index) Status(tx store.ReadTx) (Status, error) {
	s, err := readState(tx)
	if err != nil {
		return Status{}, err
	}
	c, err := tx.Counts()
	if err != nil {
		return Status{}, err
	}
	return Status{State: s.State, Enabled: x.opts.Enabled, Done: s.Done, Total: s.Total,
		Links: c.Links, Malformed: x.malformed.Load()}, nil
}
