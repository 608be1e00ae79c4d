package backfill

import (
	"bytes"
	"context"
	"errors"
	"strings"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/store"
)

// valueSource supplies the record blocks a backfill writes.
type valueSource interface {
	// batchSize is how many values fetch is given at once, at most.
	batchSize() int
	// fetch sets the Record of each pending event to the block named by
	// its CID, checked against that CID.
	fetch(ctx context.Context, pending []pendingValue) error
}

// pendingValue is an event waiting for its record block.
type pendingValue struct {
	ev  *store.Event
	cid cid.Cid
}

// carValues reads record blocks from a repo loaded from its CAR.
type carValues struct{ rp *repo.Repo }

func (carValues) batchSize() int { return 1 }

func (v carValues) fetch(ctx context.Context, pending []pendingValue) error {
	for _, p := range pending {
		blk, err := v.rp.RecordStore.Get(ctx, p.cid)
		if err != nil {
			return fail(KindMalformed, "record %s/%s: block %s: %w", p.ev.Collection, p.ev.RKey, p.cid, err)
		}
		data := blk.RawData()
		if sum, err := p.cid.Prefix().Sum(data); err != nil || !sum.Equals(p.cid) {
			return fail(KindBlock, "%w: record %s/%s: block %s of the CAR hashes to %s (%v)", ErrBlockMismatch, p.ev.Collection, p.ev.RKey, p.cid, sum, err)
		}
		p.ev.Record = data
	}
	return nil
}

// walkFunc calls fn for each key of a repo (or of the part of it that is
// wanted), in key order.
type walkFunc func(fn func(key []byte, val cid.Cid) error) error

// diff walks the repo's keys in order beside the records stored for the
// DID (read page by page) and writes the differences in batches: creates
// for keys only in the repo, updates for keys whose CID changed, deletes
// for keys only in the store or in collections the filter no longer stores.
// The walk must yield every key of the stored collections; keys of other
// collections may be left out. Record blocks are fetched from values only
// for creates and updates, values.batchSize() at a time. final runs in the
// last batch's transaction.
//
// Every write lands at or before the last stored key read, so the pages
// still to be read are not disturbed by the batches already written.
func (s *Scheduler) diff(ctx context.Context, did string, f *filter.Filter, rev string,
	walk walkFunc, values valueSource, final func(tx store.Tx) error) error {
	cur := &storeCursor{st: s.opts.Store, did: did, size: s.opts.BatchSize}
	b := &batch{s: s, did: did, checkState: true}
	now := s.opts.Now()
	event := func(coll, rkey string, action store.Action) *store.Event {
		return &store.Event{Kind: store.KindRecord, Live: false, DID: did, Rev: rev, Time: now,
			Collection: coll, RKey: rkey, Action: action}
	}
	// Events wait in queue, in order, until the values of those in need
	// are fetched.
	var (
		queue []*store.Event
		need  []pendingValue
	)
	drain := func() error {
		if len(need) > 0 {
			if err := values.fetch(ctx, need); err != nil {
				return err
			}
		}
		for _, ev := range queue {
			if err := b.add(ctx, ev); err != nil {
				return err
			}
		}
		clear(queue)
		queue, need = queue[:0], need[:0]
		return nil
	}
	push := func(ev *store.Event) error {
		if len(queue) == 0 {
			return b.add(ctx, ev)
		}
		queue = append(queue, ev)
		return nil
	}
	pushValue := func(ev *store.Event, c cid.Cid) error {
		ev.CID = c.Bytes()
		queue = append(queue, ev)
		need = append(need, pendingValue{ev: ev, cid: c})
		if len(need) >= values.batchSize() {
			return drain()
		}
		return nil
	}

	var prev []byte
	var ks keySplitter
	err := walk(func(key []byte, val cid.Cid) error {
		if prev != nil && bytes.Compare(key, prev) <= 0 {
			return fail(KindMalformed, "MST keys out of order: %q after %q", key, prev)
		}
		prev = key
		coll, rkey, ok := ks.split(key)
		if !ok {
			return fail(KindMalformed, "invalid MST key %q", key)
		}
		// Stored records before this key are gone from the repo.
		var same *storedRecord
		for {
			sr, err := cur.peek(ctx)
			if err != nil {
				return err
			}
			if sr == nil {
				break
			}
			c := strings.Compare(sr.path, string(key))
			if c > 0 {
				break
			}
			cur.next()
			if c == 0 {
				same = sr
				break
			}
			if err := push(event(sr.rec.Collection, sr.rec.RKey, store.ActionDelete)); err != nil {
				return err
			}
		}
		stored := f.Stores(coll)
		switch {
		case same != nil && !stored:
			return push(event(coll, rkey, store.ActionDelete))
		case same != nil && bytes.Equal(same.rec.CID, val.Bytes()):
			return nil
		case !stored:
			return nil
		}
		action := store.ActionCreate
		if same != nil {
			action = store.ActionUpdate
		}
		return pushValue(event(coll, rkey, action), val)
	})
	if err != nil {
		var fl *failure
		if errors.As(err, &fl) || ctx.Err() != nil || isWriteErr(err) {
			return err
		}
		return fail(KindMalformed, "walking MST: %w", err)
	}
	if err := drain(); err != nil {
		return err
	}
	// What is left in the store is gone from the repo.
	for {
		sr, err := cur.peek(ctx)
		if err != nil {
			return err
		}
		if sr == nil {
			break
		}
		cur.next()
		if err := b.add(ctx, event(sr.rec.Collection, sr.rec.RKey, store.ActionDelete)); err != nil {
			return err
		}
	}
	return b.flush(ctx, final)
}

// deleteAll deletes every stored record of a repo with its delete event,
// in batches (repos.DeleteRecords), and runs final in the last batch's
// transaction. With mustExist it stops with errGone once the repo was
// untracked meanwhile.
func (s *Scheduler) deleteAll(ctx context.Context, did string, mustExist bool, final func(tx store.Tx) error) error {
	n, err := repos.DeleteRecords(ctx, s.opts.Store, s.opts.Writer, did, repos.DeleteOptions{
		BatchSize: s.opts.BatchSize, MustExist: mustExist, Final: final})
	s.records.Add(n)
	if errors.Is(err, repos.ErrGone) {
		return errGone
	}
	return err
}

// keySplitter splits MST keys into a valid collection NSID and record key,
// for the keys of one MST walk. Keys come in order, so
// consecutive keys mostly share their collection: the last collection is
// kept, validated once and not allocated again, and record keys are checked
// by a byte loop rather than a regular expression (the validation was a
// tenth of a backfill's CPU).
type keySplitter struct {
	coll string // the last valid collection
}

func (ks *keySplitter) split(key []byte) (coll, rkey string, ok bool) {
	i := bytes.IndexByte(key, '/')
	if i < 0 {
		return "", "", false
	}
	if ks.coll != "" && string(key[:i]) == ks.coll {
		coll = ks.coll
	} else {
		coll = string(key[:i])
		if _, err := syntax.ParseNSID(coll); err != nil {
			return "", "", false
		}
		ks.coll = coll
	}
	rk := key[i+1:]
	if !validRecordKey(rk) {
		return "", "", false
	}
	return coll, string(rk), true
}

// validRecordKey reports whether k is a valid record key, as
// syntax.ParseRecordKey decides: 1 to 512 of A-Z a-z 0-9 . - _ : ~, and
// neither "." nor "..".
func validRecordKey(k []byte) bool {
	if len(k) == 0 || len(k) > 512 || string(k) == "." || string(k) == ".." {
		return false
	}
	for _, c := range k {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == '_', c == ':', c == '~':
		default:
			return false
		}
	}
	return true
}

// storedRecord is a stored record with its repo path.
type storedRecord struct {
	path string
	rec  *store.Record
}

// storeCursor reads the stored records of one repo in path order, one page
// of size records per read transaction.
type storeCursor struct {
	st    store.Store
	did   string
	size  int
	after string
	page  []storedRecord
	i     int
	done  bool
}

// peek returns the current record, or nil at the end.
func (c *storeCursor) peek(ctx context.Context) (*storedRecord, error) {
	if c.i < len(c.page) {
		return &c.page[c.i], nil
	}
	if c.done {
		return nil, nil
	}
	c.page, c.i = c.page[:0], 0
	err := c.st.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanRecords(store.RecordScan{DID: c.did, After: c.after}, func(r *store.Record) (bool, error) {
			c.page = append(c.page, storedRecord{path: r.Collection + "/" + r.RKey, rec: r})
			return len(c.page) < c.size, nil
		})
	})
	if err != nil {
		return nil, &writeErr{err}
	}
	if len(c.page) < c.size {
		c.done = true
	}
	if len(c.page) == 0 {
		return nil, nil
	}
	c.after = c.page[len(c.page)-1].path
	return &c.page[0], nil
}

func (c *storeCursor) next() { c.i++ }

// batch collects record changes of one repo and writes them BatchSize at a
// time.
type batch struct {
	s   *Scheduler
	did string
	// checkState aborts with errGone if the repo's state was removed or
	// moved out of backfilling meanwhile (untracked, deleted, made
	// inactive, or queued again).
	checkState bool
	evs        []*store.Event
}

func (b *batch) add(ctx context.Context, ev *store.Event) error {
	b.evs = append(b.evs, ev)
	if len(b.evs) >= b.s.opts.BatchSize {
		return b.flush(ctx, nil)
	}
	return nil
}

// flush writes the collected changes, then final if set, in one
// transaction. The closure copies each event, since it may run twice.
func (b *batch) flush(ctx context.Context, final func(tx store.Tx) error) error {
	if len(b.evs) == 0 && final == nil {
		return nil
	}
	evs, did, check := b.evs, b.did, b.checkState
	err := b.s.opts.Writer.Write(ctx, func(tx store.Tx) error {
		if check {
			// Untracked, deleted, made inactive or queued again (a filter
			// change) while we diffed: stop; what comes next decides.
			r, err := tx.Repo(did)
			if errors.Is(err, store.ErrNotFound) || err == nil && r.State != store.StateBackfilling {
				return errGone
			}
			if err != nil {
				return err
			}
		}
		for _, ev := range evs {
			e := *ev
			if e.Action != store.ActionCreate {
				// The indexer may have deleted the record meanwhile (a
				// narrowed filter): never delete or update what is absent.
				_, err := tx.Record(did, e.Collection, e.RKey)
				switch {
				case errors.Is(err, store.ErrNotFound) && e.Action == store.ActionDelete:
					continue
				case errors.Is(err, store.ErrNotFound):
					e.Action = store.ActionCreate
				case err != nil:
					return err
				}
			}
			if err := store.WriteRecordChange(tx, &e); err != nil {
				return err
			}
		}
		if final != nil {
			return final(tx)
		}
		return nil
	})
	if err != nil {
		return &writeErr{err}
	}
	b.s.records.Add(int64(len(evs)))
	clear(b.evs)
	b.evs = b.evs[:0]
	return nil
}

// writeErr marks an error of the store or the write path, passed through
// the MST walk unchanged.
type writeErr struct{ err error }

func (e *writeErr) Error() string { return e.err.Error() }
func (e *writeErr) Unwrap() error { return e.err }

func isWriteErr(err error) bool {
	var we *writeErr
	return errors.As(err, &we)
}
