package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cistern-dev/cistern/store"
)

// pageSize is how many rows a scan fetches per query. Callbacks run
// between pages, when no rows are open on the connection.
const pageSize = 256

// scanPages runs a keyset-paged scan inside the transaction: read returns
// the page of at most pageSize items after last (nil: the first page),
// visit is called for each item between pages (so it may run other reads
// of the transaction) until it returns false or an error, and a short
// page ends the scan.
func scanPages[T any](read func(last *T) ([]T, error), visit func(T) (bool, error)) error {
	var last *T
	for {
		page, err := read(last)
		if err != nil {
			return err
		}
		for _, it := range page {
			if more, err := visit(it); err != nil || !more {
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
		last = &page[len(page)-1]
	}
}

// tx is both the store.ReadTx of View and the store.Tx of Update.
type tx struct {
	s        *Store
	ctx      context.Context
	ptx      pgx.Tx
	writable bool

	// Update only: the cistern_sys row as locked at the start, and what
	// this transaction assigned since.
	lastEvent, lastSeq int64
	base               sysCounts
	// maxSec, maxNsec are the running maximum of event times (nil: no
	// event yet); timeRaised says this transaction raised it.
	maxSec     *int64
	maxNsec    *int32
	timeRaised bool

	// connErr is the first failure that calls for the transaction to be
	// redone; sqlErr the first other failed statement (after which the
	// database refuses the rest of the transaction).
	connErr, sqlErr error

	// queued holds writes not sent yet, and handlers what reads their
	// answers (nil: none to read); they go out, in order, ahead of the
	// next statement that needs an answer, or at the end.
	queued   *pgx.Batch
	handlers []func(pgx.BatchResults) error
	// ops are the changes to block references and counters of record
	// writes and events, in order; those of a queued write wait for its
	// answer (the CID it replaced). resolve applies them.
	ops []*refOp
	// blocks holds the blocks this transaction read or changed; dirty ones
	// are written before blocks are read by SQL and at the end.
	blocks map[blockKey]*blockEntry
	// colls holds the changes to per-repo collection counts.
	colls map[collKey]int64
	// counts holds the changes to the counters.
	counts countDelta

	// linkOps are the record link writes (PutLinks, DeleteRecord) whose
	// answers (the links the record had) resolveLinks waits for, in order.
	linkOps []*linkOp
}

type sysCounts struct {
	repos, records, events, blocks, blockBytes, links int64
}

type blockKey struct{ did, cid string }

type collKey struct{ did, collection string }

func (s *Store) newTx(ctx context.Context, ptx pgx.Tx, writable bool) *tx {
	return &tx{s: s, ctx: ctx, ptx: ptx, writable: writable}
}

var _ store.Tx = (*tx)(nil)

// note records a failed statement and returns the error to hand to the
// caller.
func (t *tx) note(err error) error {
	if err == nil || errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if retryable(err, t.ptx) {
		if t.connErr == nil {
			t.connErr = err
		}
	} else if t.sqlErr == nil {
		t.sqlErr = err
	}
	return readOnlyErr(err)
}

// queue adds a write to be sent with the next round trip.
func (t *tx) queue(sql string, args ...any) { t.queueWith(nil, sql, args...) }

// queueWith adds a statement whose answer h reads when it is sent.
func (t *tx) queueWith(h func(pgx.BatchResults) error, sql string, args ...any) {
	if t.queued == nil {
		t.queued = &pgx.Batch{}
	}
	t.queued.Queue(sql, args...)
	t.handlers = append(t.handlers, h)
}

// pending is a batch holding the queued statements, to which a caller
// adds its own.
type pending struct {
	b        *pgx.Batch
	handlers []func(pgx.BatchResults) error
}

// take returns the queued statements as a batch (with derived: after
// applying the pending reference changes, with the writes of dirty blocks
// and collection counts), leaving the queue empty.
func (t *tx) take(derived bool) (pending, error) {
	if derived {
		if err := t.resolve(); err != nil {
			return pending{}, err
		}
		if err := t.resolveLinks(); err != nil {
			return pending{}, err
		}
		t.queueDerived()
	}
	p := pending{b: t.queued, handlers: t.handlers}
	if p.b == nil {
		p.b = &pgx.Batch{}
	}
	t.queued, t.handlers = nil, nil
	return p, nil
}

// send sends p, reads the answers of its queued statements, and returns
// the results of the statements the caller added. The caller must Close
// them.
func (t *tx) send(p pending) (pgx.BatchResults, error) {
	br := t.ptx.SendBatch(t.ctx, p.b)
	for _, h := range p.handlers {
		var err error
		if h == nil {
			_, err = br.Exec()
		} else {
			err = h(br)
		}
		if err != nil {
			br.Close()
			return nil, t.note(fmt.Errorf("pgstore: queued write: %w", err))
		}
	}
	return br, nil
}

// flush sends the queued statements (and, with derived, the pending
// reference changes, dirty blocks and collection counts), if any.
func (t *tx) flush(derived bool) error {
	p, err := t.take(derived)
	if err != nil {
		return err
	}
	if p.b.Len() == 0 {
		return nil
	}
	br, err := t.send(p)
	if err != nil {
		return err
	}
	return t.note(br.Close())
}

// queryRow runs one query after the queued writes, in one round trip, and
// scans its row.
func (t *tx) queryRow(derived bool, sql string, args []any, dest ...any) error {
	p, err := t.take(derived)
	if err != nil {
		return err
	}
	p.b.Queue(sql, args...)
	br, err := t.send(p)
	if err != nil {
		return err
	}
	err = br.QueryRow().Scan(dest...)
	cerr := br.Close()
	if err == nil {
		err = cerr
	}
	return t.note(err)
}

// query runs one query after the queued writes and calls row for each
// row, while the rows are open: row must not run other statements.
func (t *tx) query(derived bool, sql string, args []any, row func(pgx.Rows) error) error {
	p, err := t.take(derived)
	if err != nil {
		return err
	}
	p.b.Queue(sql, args...)
	br, err := t.send(p)
	if err != nil {
		return err
	}
	rows, err := br.Query()
	if err == nil {
		for rows.Next() {
			if err = row(rows); err != nil {
				break
			}
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	cerr := br.Close()
	if err == nil {
		err = cerr
	}
	return t.note(err)
}

func (t *tx) decodeRepo(did string, data []byte) (*store.Repo, error) {
	r := new(store.Repo)
	if err := t.s.dec.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("pgstore: repo %s: %w", did, err)
	}
	return r, nil
}

func (t *tx) Repo(did string) (*store.Repo, error) {
	var data []byte
	err := t.queryRow(false, `SELECT data FROM cistern_repos WHERE did = $1`, []any{did}, &data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: repo %s: %w", did, err)
	}
	return t.decodeRepo(did, data)
}

// handleKey is the indexed form of a handle, "" for none.
func handleKey(h string) string {
	if h == "" || strings.EqualFold(h, "handle.invalid") {
		return ""
	}
	return strings.ToLower(h)
}

func (t *tx) RepoByHandle(h string) (*store.Repo, error) {
	k := handleKey(h)
	if k == "" {
		return nil, store.ErrNotFound
	}
	var did string
	var data []byte
	err := t.queryRow(false, `SELECT did, data FROM cistern_repos WHERE handle_key = $1
		ORDER BY handle_seq DESC LIMIT 1`, []any{k}, &did, &data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: repo by handle %q: %w", h, err)
	}
	return t.decodeRepo(did, data)
}

func (t *tx) ScanRepos(after string, fn func(r *store.Repo) (bool, error)) error {
	type row struct {
		did  string
		data []byte
	}
	return scanPages(func(last *row) ([]row, error) {
		if last != nil {
			after = last.did
		}
		var page []row
		err := t.query(false, `SELECT did, data FROM cistern_repos WHERE did > $1 ORDER BY did LIMIT $2`,
			[]any{after, pageSize}, func(rows pgx.Rows) error {
				var r row
				if err := rows.Scan(&r.did, &r.data); err != nil {
					return err
				}
				page = append(page, r)
				return nil
			})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan repos: %w", err)
		}
		return page, nil
	}, func(r row) (bool, error) {
		repo, err := t.decodeRepo(r.did, r.data)
		if err != nil {
			return false, err
		}
		return fn(repo)
	})
}

func (t *tx) Record(did, collection, rkey string) (*store.Record, error) {
	r := &store.Record{DID: did, Collection: collection, RKey: rkey}
	var seq int64
	err := t.queryRow(true, `SELECT r.cid, r.rev, r.seq, b.value FROM cistern_records r
		LEFT JOIN cistern_blocks b ON b.did = r.did AND b.cid = r.cid
		WHERE r.did = $1 AND r.path = $2 AND r.collection = $3`,
		[]any{did, collection + "/" + rkey, collection}, &r.CID, &r.Rev, &seq, &r.Value)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: record %s/%s/%s: %w", did, collection, rkey, err)
	}
	r.Seq = uint64(seq)
	return r, nil
}

// prefixEnd returns the smallest string greater than every string with
// the prefix p ("" for none): p ends in "/", and "0" follows "/".
func prefixEnd(p string) string {
	if p == "" {
		return ""
	}
	return p[:len(p)-1] + "0"
}

func (t *tx) ScanRecords(q store.RecordScan, fn func(r *store.Record) (bool, error)) error {
	prefix := ""
	if q.Collection != "" {
		prefix = q.Collection + "/"
	}
	// The range still to visit: lo (inclusive unless loEx) to hi
	// (exclusive unless ""), in paths.
	lo, loEx, hi := prefix, false, prefixEnd(prefix)
	if q.After != "" {
		if q.Reverse {
			hi = prefix + q.After
		} else {
			lo, loEx = prefix+q.After, true
		}
	}
	cols := `r.path, r.cid, r.rev, r.seq, NULL::bytea`
	join := ""
	if q.WithValues {
		cols = `r.path, r.cid, r.rev, r.seq, b.value`
		join = `LEFT JOIN cistern_blocks b ON b.did = r.did AND b.cid = r.cid`
	}
	type row struct {
		path string
		r    *store.Record
	}
	return scanPages(func(last *row) ([]row, error) {
		if last != nil {
			if q.Reverse {
				hi = last.path
			} else {
				lo, loEx = last.path, true
			}
		}
		where := []string{"r.did = $1"}
		args := []any{q.DID}
		if loEx {
			args = append(args, lo)
			where = append(where, fmt.Sprintf("r.path > $%d", len(args)))
		} else if lo != "" {
			args = append(args, lo)
			where = append(where, fmt.Sprintf("r.path >= $%d", len(args)))
		}
		if hi != "" {
			args = append(args, hi)
			where = append(where, fmt.Sprintf("r.path < $%d", len(args)))
		}
		order := "r.path"
		if q.Reverse {
			order = "r.path DESC"
		}
		sql := fmt.Sprintf(`SELECT %s FROM cistern_records r %s WHERE %s ORDER BY %s LIMIT %d`,
			cols, join, strings.Join(where, " AND "), order, pageSize)
		var page []row
		err := t.query(q.WithValues, sql, args, func(rows pgx.Rows) error {
			var path string
			var seq int64
			r := &store.Record{DID: q.DID}
			if err := rows.Scan(&path, &r.CID, &r.Rev, &seq, &r.Value); err != nil {
				return err
			}
			coll, rkey, ok := strings.Cut(path, "/")
			if !ok {
				return fmt.Errorf("malformed record path %q", path)
			}
			r.Collection, r.RKey, r.Seq = coll, rkey, uint64(seq)
			page = append(page, row{path, r})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan records of %s: %w", q.DID, err)
		}
		return page, nil
	}, func(r row) (bool, error) { return fn(r.r) })
}

func (t *tx) ScanCollection(collection string, after uint64, fn func(r *store.Record) (bool, error)) error {
	before := int64(math.MaxInt64)
	if after != 0 && after <= math.MaxInt64 {
		before = int64(after)
	}
	return scanPages(func(last **store.Record) ([]*store.Record, error) {
		if last != nil {
			before = int64((*last).Seq)
		}
		var page []*store.Record
		err := t.query(true, `SELECT r.did, r.path, r.cid, r.rev, r.seq, b.value FROM cistern_records r
			LEFT JOIN cistern_blocks b ON b.did = r.did AND b.cid = r.cid
			WHERE r.collection = $1 AND r.seq < $2 ORDER BY r.seq DESC LIMIT $3`,
			[]any{collection, before, pageSize}, func(rows pgx.Rows) error {
				var path string
				var seq int64
				r := &store.Record{Collection: collection}
				if err := rows.Scan(&r.DID, &path, &r.CID, &r.Rev, &seq, &r.Value); err != nil {
					return err
				}
				r.RKey = strings.TrimPrefix(path, collection+"/")
				r.Seq = uint64(seq)
				page = append(page, r)
				return nil
			})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan collection %s: %w", collection, err)
		}
		return page, nil
	}, fn)
}

func (t *tx) CountRecords(did, collection string) (int64, error) {
	var n int64
	var err error
	if collection != "" {
		err = t.queryRow(true, `SELECT coalesce(sum(n), 0)::bigint FROM cistern_collections WHERE did = $1 AND collection = $2`,
			[]any{did, collection}, &n)
	} else {
		err = t.queryRow(true, `SELECT coalesce(sum(n), 0)::bigint FROM cistern_collections WHERE did = $1`, []any{did}, &n)
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: count records of %s: %w", did, err)
	}
	return n, nil
}

func (t *tx) Collections(did string) ([]string, error) {
	var out []string
	err := t.query(true, `SELECT collection FROM cistern_collections WHERE did = $1 AND n > 0 ORDER BY collection`,
		[]any{did}, func(rows pgx.Rows) error {
			var c string
			if err := rows.Scan(&c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("pgstore: collections of %s: %w", did, err)
	}
	return out, nil
}

func (t *tx) Block(did string, cid []byte) ([]byte, error) {
	if err := t.resolve(); err != nil {
		return nil, err
	}
	if e, ok := t.blocks[blockKey{did, string(cid)}]; ok {
		if !e.has {
			return nil, store.ErrNotFound
		}
		if e.value != nil {
			return append([]byte(nil), e.value...), nil
		}
	}
	var v []byte
	err := t.queryRow(true, `SELECT value FROM cistern_blocks WHERE did = $1 AND cid = $2 AND value IS NOT NULL`,
		[]any{did, cid}, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: block %s %x: %w", did, cid, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (t *tx) BlockRefs(did string, cid []byte) (uint64, error) {
	if len(cid) == 0 {
		return 0, nil
	}
	if err := t.resolve(); err != nil {
		return 0, err
	}
	if e, ok := t.blocks[blockKey{did, string(cid)}]; ok {
		return uint64(e.refs), nil
	}
	var n int64
	err := t.queryRow(false, `SELECT refs FROM cistern_blocks WHERE did = $1 AND cid = $2`, []any{did, cid}, &n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: block refs %s %x: %w", did, cid, err)
	}
	return uint64(n), nil
}

const eventCols = `e.id, e.kind, e.live, e.did, e.rev, e.sec, e.nsec, e.collection, e.rkey, e.action, e.cid,
	e.handle, e.active, e.status, e.error, b.value`

const eventFrom = `FROM cistern_events e LEFT JOIN cistern_blocks b ON e.kind = 1 AND b.did = e.did AND b.cid = e.cid`

func scanEvent(rows pgx.Row) (*store.Event, error) {
	ev := new(store.Event)
	var id, sec int64
	var nsec int32
	var kind, action int16
	if err := rows.Scan(&id, &kind, &ev.Live, &ev.DID, &ev.Rev, &sec, &nsec, &ev.Collection, &ev.RKey, &action,
		&ev.CID, &ev.Handle, &ev.Active, &ev.Status, &ev.Error, &ev.Record); err != nil {
		return nil, err
	}
	ev.ID = uint64(id)
	ev.Kind = store.EventKind(kind)
	ev.Action = store.Action(action)
	ev.Time = time.Unix(sec, int64(nsec)).UTC()
	if len(ev.CID) == 0 {
		ev.CID = nil
	}
	return ev, nil
}

func (t *tx) Event(id uint64) (*store.Event, error) {
	if id == 0 || id > math.MaxInt64 {
		return nil, store.ErrNotFound
	}
	var ev *store.Event
	err := t.query(true, `SELECT `+eventCols+` `+eventFrom+` WHERE e.id = $1`, []any{int64(id)}, func(rows pgx.Rows) error {
		var err error
		ev, err = scanEvent(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: event %d: %w", id, err)
	}
	if ev == nil {
		return nil, store.ErrNotFound
	}
	return ev, nil
}

func (t *tx) ScanEvents(after uint64, fn func(ev *store.Event) (bool, error)) error {
	if after >= math.MaxInt64 {
		return nil
	}
	cur := int64(after)
	return scanPages(func(last **store.Event) ([]*store.Event, error) {
		if last != nil {
			cur = int64((*last).ID)
		}
		var page []*store.Event
		err := t.query(true, `SELECT `+eventCols+` `+eventFrom+` WHERE e.id > $1 ORDER BY e.id LIMIT $2`,
			[]any{cur, pageSize}, func(rows pgx.Rows) error {
				ev, err := scanEvent(rows)
				if err != nil {
					return err
				}
				page = append(page, ev)
				return nil
			})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan events after %d: %w", cur, err)
		}
		return page, nil
	}, fn)
}

func (t *tx) EventBounds() (oldest, newest uint64, err error) {
	var o *int64
	var n int64
	if t.writable {
		err = t.queryRow(false, `SELECT min(id) FROM cistern_events`, nil, &o)
		n = t.lastEvent
	} else {
		err = t.queryRow(false, `SELECT (SELECT min(id) FROM cistern_events), last_event FROM cistern_sys WHERE id = 1`, nil, &o, &n)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("pgstore: event bounds: %w", err)
	}
	if o != nil {
		oldest = uint64(*o)
	}
	return oldest, uint64(n), nil
}

// EventAtTime returns the id of the first event whose time is at or after
// tm, taking times as their running maximum in id order; 0 when no event at
// or after tm was ever appended. See cistern_event_times in SchemaSQL.
func (t *tx) EventAtTime(tm time.Time) (uint64, error) {
	var id int64
	err := t.queryRow(false, `SELECT id FROM cistern_event_times WHERE (sec, nsec) >= ($1, $2)
		ORDER BY sec, nsec LIMIT 1`, []any{tm.Unix(), int32(tm.Nanosecond())}, &id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: event at time %s: %w", tm.UTC().Format(time.RFC3339Nano), err)
	}
	return uint64(id), nil
}

func (t *tx) ScanQueue(fn func(did string, due time.Time) (bool, error)) error {
	type entry struct {
		did  string
		sec  int64
		nsec int32
	}
	return scanPages(func(last *entry) ([]entry, error) {
		var page []entry
		sql := `SELECT did, due_sec, due_nsec FROM cistern_queue ORDER BY due_sec, due_nsec, did LIMIT $1`
		args := []any{pageSize}
		if last != nil {
			sql = `SELECT did, due_sec, due_nsec FROM cistern_queue WHERE (due_sec, due_nsec, did) > ($2, $3, $4)
				ORDER BY due_sec, due_nsec, did LIMIT $1`
			args = append(args, last.sec, last.nsec, last.did)
		}
		err := t.query(false, sql, args, func(rows pgx.Rows) error {
			var e entry
			if err := rows.Scan(&e.did, &e.sec, &e.nsec); err != nil {
				return err
			}
			page = append(page, e)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan queue: %w", err)
		}
		return page, nil
	}, func(e entry) (bool, error) { return fn(e.did, time.Unix(e.sec, int64(e.nsec)).UTC()) })
}

func (t *tx) ScanBuffer(did string, fn func(c *store.BufferedCommit) (bool, error)) error {
	after := ""
	return scanPages(func(last **store.BufferedCommit) ([]*store.BufferedCommit, error) {
		if last != nil {
			after = (*last).Rev
		}
		var page []*store.BufferedCommit
		err := t.query(false, `SELECT rev, seq, source, data FROM cistern_buffer WHERE did = $1 AND rev > $2
			ORDER BY rev LIMIT $3`, []any{did, after, pageSize}, func(rows pgx.Rows) error {
			c := &store.BufferedCommit{DID: did}
			if err := rows.Scan(&c.Rev, &c.Seq, &c.Source, &c.Data); err != nil {
				return err
			}
			page = append(page, c)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan buffer of %s: %w", did, err)
		}
		return page, nil
	}, fn)
}

func (t *tx) Meta(key string) ([]byte, error) {
	var v []byte
	err := t.queryRow(false, `SELECT value FROM cistern_meta WHERE key = $1`, []any{key}, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: meta %q: %w", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (t *tx) Counts() (store.Counts, error) {
	c := store.Counts{ReposByState: make(map[store.RepoState]int64)}
	var base sysCounts
	if t.writable {
		if err := t.resolve(); err != nil {
			return c, err
		}
		if err := t.resolveLinks(); err != nil {
			return c, err
		}
		base = t.base
	} else if err := t.queryRow(false, `SELECT repos, records, events, blocks, block_bytes, links FROM cistern_sys WHERE id = 1`, nil,
		&base.repos, &base.records, &base.events, &base.blocks, &base.blockBytes, &base.links); err != nil {
		return c, fmt.Errorf("pgstore: counts: %w", err)
	}
	d := &t.counts
	c.Repos = base.repos + d.repos
	c.Records = base.records + d.records
	c.Events = base.events + d.events
	c.Blocks = base.blocks + d.blocks
	c.BlockBytes = base.blockBytes + d.blockBytes
	c.Links = base.links + d.links
	err := t.query(false, `SELECT state, n FROM cistern_state_counts WHERE n <> 0`, nil, func(rows pgx.Rows) error {
		var s int16
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return err
		}
		c.ReposByState[store.RepoState(s)] = n
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("pgstore: counts: %w", err)
	}
	for s, n := range d.states {
		if n == 0 {
			continue
		}
		if v := c.ReposByState[store.RepoState(s)] + n; v != 0 {
			c.ReposByState[store.RepoState(s)] = v
		} else {
			delete(c.ReposByState, store.RepoState(s))
		}
	}
	return c, nil
}
