package pgstore

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cistern-dev/cistern/store"
)

// countDelta is the change a transaction makes to the counters.
type countDelta struct {
	repos, records, events, blocks, blockBytes, links int64
	states                                            [256]int64
}

// blockEntry is a block as this transaction sees it.
type blockEntry struct {
	refs    int64
	has     bool   // a value is stored
	size    int64  // its length
	value   []byte // the value when this transaction stored it, else nil
	changed bool   // the value was stored or dropped by this transaction
	dirty   bool   // the entry must be written
}

func (t *tx) checkWritable() error {
	if !t.writable {
		return store.ErrReadOnly
	}
	return nil
}

// checkField refuses an empty key field.
func checkField(what, v string) error {
	if v == "" {
		return fmt.Errorf("pgstore: empty %s", what)
	}
	return nil
}

const blockSelect = `SELECT refs, value IS NOT NULL, coalesce(length(value), 0) FROM cistern_blocks WHERE did = $1 AND cid = $2`

// scanBlock reads the answer of blockSelect into a new entry.
func scanBlock(row pgx.Row) (*blockEntry, error) {
	e := new(blockEntry)
	err := row.Scan(&e.refs, &e.has, &e.size)
	if errors.Is(err, pgx.ErrNoRows) {
		return new(blockEntry), nil
	}
	return e, err
}

func (t *tx) setBlock(k blockKey, e *blockEntry) {
	if t.blocks == nil {
		t.blocks = make(map[blockKey]*blockEntry)
	}
	t.blocks[k] = e
}

// setValue stores value as the block of e if it has none.
func (t *tx) setValue(e *blockEntry, value []byte) {
	if value == nil || e.has {
		return
	}
	e.value, e.has, e.size, e.changed, e.dirty = value, true, int64(len(value)), true, true
	t.counts.blocks++
	t.counts.blockBytes += int64(len(value))
}

// addRef adds a reference to a block, storing value if it has none.
func (t *tx) addRef(did string, cid, value []byte) {
	e := t.entry(did, cid)
	t.setValue(e, value)
	e.refs++
	e.dirty = true
}

// entry returns the cached entry of a block, which resolve loaded.
func (t *tx) entry(did string, cid []byte) *blockEntry {
	k := blockKey{did, string(cid)}
	e, ok := t.blocks[k]
	if !ok { // not reached: resolve loads every block its ops touch
		e = new(blockEntry)
		t.setBlock(k, e)
	}
	return e
}

// dropRefs drops n references to a block, dropping its value with the
// last.
func (t *tx) dropRefs(did string, cid []byte, n int64) {
	e := t.entry(did, cid)
	e.dirty = true
	if e.refs > n {
		e.refs -= n
		return
	}
	if e.refs < n {
		t.s.log.Warn("pgstore: dropping more references than a block has", "did", did, "cid", fmt.Sprintf("%x", cid), "refs", e.refs, "drop", n)
	}
	e.refs = 0
	if e.has {
		t.counts.blocks--
		t.counts.blockBytes -= e.size
		e.value, e.has, e.size, e.changed = nil, false, 0, true
	}
}

// opKind says what a refOp does.
type opKind uint8

const (
	opPut    opKind = iota + 1 // a record written: cid replaced old
	opDelete                   // a record deleted: old was its CID
	opAdd                      // an event's reference to cid
	opDrop                     // n references to cid dropped (events pruned)
)

// refOp is a change to block references and counters. For opPut and
// opDelete, old is read from the answer of the queued write (answered
// tells it was).
type refOp struct {
	kind       opKind
	did, coll  string
	cid, value []byte
	n          int64
	old        []byte
	answered   bool
}

// keys returns the blocks op touches.
func (op *refOp) keys() []blockKey {
	var out []blockKey
	if len(op.cid) > 0 {
		out = append(out, blockKey{op.did, string(op.cid)})
	}
	if op.old != nil && string(op.old) != string(op.cid) {
		out = append(out, blockKey{op.did, string(op.old)})
	}
	return out
}

// resolve sends the queued writes whose answers pending ops wait for,
// reads the blocks the ops touch that are not known yet (one round trip
// each), and applies the ops in order.
func (t *tx) resolve() error {
	if len(t.ops) == 0 {
		return nil
	}
	if t.queued != nil && t.queued.Len() > 0 {
		if err := t.flush(false); err != nil {
			return err
		}
	}
	var keys []blockKey
	for _, op := range t.ops {
		if (op.kind == opPut || op.kind == opDelete) && !op.answered {
			return fmt.Errorf("pgstore: internal error: a record write was not answered")
		}
		keys = append(keys, op.keys()...)
	}
	if err := t.loadBlocks(keys); err != nil {
		return err
	}
	ops := t.ops
	t.ops = nil
	for _, op := range ops {
		switch op.kind {
		case opPut:
			switch {
			case op.old == nil:
				t.addRef(op.did, op.cid, op.value)
				t.addColl(op.did, op.coll, 1)
				t.counts.records++
			case string(op.old) == string(op.cid):
				// Same value: the record keeps its one reference; store
				// the value only if it went missing.
				t.setValue(t.blocks[blockKey{op.did, string(op.cid)}], op.value)
			default:
				t.addRef(op.did, op.cid, op.value)
				t.dropRefs(op.did, op.old, 1)
			}
		case opDelete:
			if op.old != nil {
				t.dropRefs(op.did, op.old, 1)
				t.addColl(op.did, op.coll, -1)
				t.counts.records--
			}
		case opAdd:
			t.addRef(op.did, op.cid, op.value)
		case opDrop:
			t.dropRefs(op.did, op.cid, op.n)
		}
	}
	return nil
}

// queueDerived queues the writes of dirty blocks and collection counts.
func (t *tx) queueDerived() {
	for k, e := range t.blocks {
		if !e.dirty {
			continue
		}
		switch {
		case e.refs <= 0:
			t.queue(`DELETE FROM cistern_blocks WHERE did = $1 AND cid = $2`, k.did, []byte(k.cid))
		case e.changed:
			t.queue(`INSERT INTO cistern_blocks (did, cid, refs, value) VALUES ($1, $2, $3, $4)
				ON CONFLICT (did, cid) DO UPDATE SET refs = excluded.refs, value = excluded.value`,
				k.did, []byte(k.cid), e.refs, e.value)
		default:
			t.queue(`INSERT INTO cistern_blocks (did, cid, refs, value) VALUES ($1, $2, $3, NULL)
				ON CONFLICT (did, cid) DO UPDATE SET refs = excluded.refs`, k.did, []byte(k.cid), e.refs)
		}
		e.dirty, e.changed, e.value = false, false, nil
	}
	for k, n := range t.colls {
		if n == 0 {
			continue
		}
		t.queue(`INSERT INTO cistern_collections (did, collection, n) VALUES ($1, $2, $3)
			ON CONFLICT (did, collection) DO UPDATE SET n = cistern_collections.n + excluded.n`, k.did, k.collection, n)
		if n < 0 {
			t.queue(`DELETE FROM cistern_collections WHERE did = $1 AND collection = $2 AND n <= 0`, k.did, k.collection)
		}
	}
	clear(t.colls)
}

func (t *tx) addColl(did, collection string, n int64) {
	if t.colls == nil {
		t.colls = make(map[collKey]int64)
	}
	t.colls[collKey{did, collection}] += n
}

// finish writes what the transaction kept in memory: queued writes, blocks,
// collection counts, counters, ids, and this Update's token.
func (t *tx) finish(token int64) error {
	if err := t.resolve(); err != nil {
		return err
	}
	if err := t.resolveLinks(); err != nil {
		return err
	}
	t.queueDerived()
	d := &t.counts
	t.queue(`UPDATE cistern_sys SET last_event = $1, last_seq = $2, repos = repos + $3, records = records + $4,
		events = events + $5, blocks = blocks + $6, block_bytes = block_bytes + $7, links = links + $8 WHERE id = 1`,
		t.lastEvent, t.lastSeq, d.repos, d.records, d.events, d.blocks, d.blockBytes, d.links)
	if t.timeRaised {
		t.queue(`UPDATE cistern_sys SET max_sec = $1, max_nsec = $2 WHERE id = 1`, *t.maxSec, *t.maxNsec)
	}
	for s, n := range d.states {
		if n != 0 {
			t.queue(`INSERT INTO cistern_state_counts (state, n) VALUES ($1, $2)
				ON CONFLICT (state) DO UPDATE SET n = cistern_state_counts.n + excluded.n`, int16(s), n)
		}
	}
	t.queue(`INSERT INTO cistern_writers (writer, token) VALUES ($1, $2)
		ON CONFLICT (writer) DO UPDATE SET token = excluded.token`, t.s.writer, token)
	return t.flush(false)
}

func (t *tx) PutRepo(r *store.Repo) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := checkField("repo DID", r.DID); err != nil {
		return err
	}
	data, err := t.s.enc.Marshal(r)
	if err != nil {
		return fmt.Errorf("pgstore: put repo %s: %w", r.DID, err)
	}
	var hk *string
	if k := handleKey(r.Handle); k != "" {
		hk = &k
	}
	t.lastSeq++
	var oldState *int16
	err = t.queryRow(false, `WITH old AS (SELECT state FROM cistern_repos WHERE did = $1),
		up AS (INSERT INTO cistern_repos (did, state, handle_key, handle_seq, data) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (did) DO UPDATE SET state = excluded.state, data = excluded.data, handle_key = excluded.handle_key,
			handle_seq = CASE WHEN cistern_repos.handle_key IS NOT DISTINCT FROM excluded.handle_key
				THEN cistern_repos.handle_seq ELSE excluded.handle_seq END)
		SELECT (SELECT state FROM old)`, []any{r.DID, int16(r.State), hk, t.lastSeq, data}, &oldState)
	if err != nil {
		return fmt.Errorf("pgstore: put repo %s: %w", r.DID, err)
	}
	if oldState != nil {
		t.counts.states[uint8(*oldState)]--
	} else {
		t.counts.repos++
	}
	t.counts.states[r.State]++
	return nil
}

func (t *tx) DeleteRepo(did string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if did == "" {
		return nil
	}
	var oldState *int16
	err := t.queryRow(false, `WITH del AS (DELETE FROM cistern_repos WHERE did = $1 RETURNING state)
		SELECT (SELECT state FROM del)`, []any{did}, &oldState)
	if err != nil {
		return fmt.Errorf("pgstore: delete repo %s: %w", did, err)
	}
	if oldState != nil {
		t.counts.states[uint8(*oldState)]--
		t.counts.repos--
	}
	t.queue(`DELETE FROM cistern_queue WHERE did = $1`, did)
	t.queue(`DELETE FROM cistern_buffer WHERE did = $1`, did)
	return nil
}

func (t *tx) PutRecord(r *store.Record) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("pgstore: put record: %w", err)
	}
	t.lastSeq++
	seq := t.lastSeq
	// Queued: the upsert answers the CID it replaced, from which resolve
	// derives the reference and counter changes.
	op := &refOp{kind: opPut, did: r.DID, coll: r.Collection, cid: r.CID, value: r.Value}
	t.queueWith(op.readOld, `WITH old AS (SELECT cid FROM cistern_records WHERE did = $1 AND path = $2),
		up AS (INSERT INTO cistern_records (did, path, collection, cid, rev, seq) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (did, path) DO UPDATE SET cid = excluded.cid, rev = excluded.rev, seq = excluded.seq)
		SELECT (SELECT cid FROM old)`, r.DID, r.Collection+"/"+r.RKey, r.Collection, r.CID, r.Rev, seq)
	t.ops = append(t.ops, op)
	r.Seq = uint64(seq)
	return nil
}

// readOld reads the answer of a queued record write: the CID the record
// had, or NULL.
func (op *refOp) readOld(br pgx.BatchResults) error {
	if err := br.QueryRow().Scan(&op.old); err != nil {
		return fmt.Errorf("record %s %s: %w", op.did, op.coll, err)
	}
	op.answered = true
	return nil
}

func (t *tx) DeleteRecord(did, collection, rkey string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	op := &refOp{kind: opDelete, did: did, coll: collection}
	t.queueWith(op.readOld, `WITH del AS (DELETE FROM cistern_records WHERE did = $1 AND path = $2 AND collection = $3 RETURNING cid)
		SELECT (SELECT cid FROM del)`, did, collection+"/"+rkey, collection)
	t.ops = append(t.ops, op)
	t.removeLinks(did, collection, rkey)
	return nil
}

func (t *tx) AppendEvent(ev *store.Event) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if ev.Kind == store.KindRecord && len(ev.CID) > 0 {
		if ev.DID == "" {
			return fmt.Errorf("pgstore: append event: record event without a DID")
		}
		t.ops = append(t.ops, &refOp{kind: opAdd, did: ev.DID, cid: ev.CID, value: ev.Record})
	}
	t.lastEvent++
	var cid []byte
	if len(ev.CID) > 0 {
		cid = ev.CID
	}
	t.queue(`INSERT INTO cistern_events (id, kind, live, did, rev, sec, nsec, collection, rkey, action, cid, handle, active, status, error)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		t.lastEvent, int16(ev.Kind), ev.Live, ev.DID, ev.Rev, ev.Time.Unix(), int32(ev.Time.Nanosecond()),
		ev.Collection, ev.RKey, int16(ev.Action), cid, ev.Handle, ev.Active, ev.Status, ev.Error)
	ev.ID = uint64(t.lastEvent)
	t.counts.events++
	sec, nsec := ev.Time.Unix(), int32(ev.Time.Nanosecond())
	if t.maxSec == nil || sec > *t.maxSec || sec == *t.maxSec && nsec > *t.maxNsec {
		t.maxSec, t.maxNsec, t.timeRaised = &sec, &nsec, true
		t.queue(`INSERT INTO cistern_event_times (sec, nsec, id) VALUES ($1, $2, $3)`, sec, nsec, t.lastEvent)
	}
	return nil
}

func (t *tx) PruneEvents(through uint64, limit int) (int, error) {
	if err := t.checkWritable(); err != nil {
		return 0, err
	}
	if through == 0 {
		return 0, nil
	}
	upto := int64(math.MaxInt64)
	if through < math.MaxInt64 {
		upto = int64(through)
	}
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	type group struct {
		did string
		cid []byte
		n   int64
	}
	var groups []group
	total := 0
	err := t.query(false, `WITH del AS (DELETE FROM cistern_events WHERE id IN
			(SELECT id FROM cistern_events WHERE id <= $1 ORDER BY id LIMIT $2) RETURNING kind, did, cid)
		SELECT CASE WHEN kind = 1 THEN did END, CASE WHEN kind = 1 THEN cid END, count(*) FROM del GROUP BY 1, 2`,
		[]any{upto, lim}, func(rows pgx.Rows) error {
			var did *string
			var g group
			if err := rows.Scan(&did, &g.cid, &g.n); err != nil {
				return err
			}
			total += int(g.n)
			if did != nil && len(g.cid) > 0 {
				g.did = *did
				groups = append(groups, g)
			}
			return nil
		})
	if err != nil {
		return 0, fmt.Errorf("pgstore: prune events through %d: %w", through, err)
	}
	for _, g := range groups {
		t.ops = append(t.ops, &refOp{kind: opDrop, did: g.did, cid: g.cid, n: g.n})
	}
	if total > 0 {
		// The time index entries whose events are all gone, but the newest
		// of them (see SchemaSQL).
		t.queue(`DELETE FROM cistern_event_times WHERE id < (SELECT max(id) FROM cistern_event_times WHERE id <
			(SELECT max(id) FROM cistern_event_times WHERE id <= coalesce((SELECT min(id) FROM cistern_events), $1)))`,
			t.lastEvent+1)
	}
	t.counts.events -= int64(total)
	return total, nil
}

// loadBlocks reads the entries of the blocks not known yet, after the
// queued statements, in one round trip.
func (t *tx) loadBlocks(keys []blockKey) error {
	p, err := t.take(false)
	if err != nil {
		return err
	}
	var load []blockKey
	seen := map[blockKey]bool{}
	for _, k := range keys {
		if _, ok := t.blocks[k]; ok || seen[k] {
			continue
		}
		seen[k] = true
		load = append(load, k)
		p.b.Queue(blockSelect, k.did, []byte(k.cid))
	}
	if p.b.Len() == 0 {
		return nil
	}
	br, err := t.send(p)
	if err != nil {
		return err
	}
	for _, k := range load {
		e, err := scanBlock(br.QueryRow())
		if err != nil {
			br.Close()
			return t.note(fmt.Errorf("pgstore: block %s %x: %w", k.did, k.cid, err))
		}
		t.setBlock(k, e)
	}
	return t.note(br.Close())
}

func (t *tx) Enqueue(did string, due time.Time) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := checkField("queued DID", did); err != nil {
		return err
	}
	t.queue(`INSERT INTO cistern_queue (did, due_sec, due_nsec) VALUES ($1, $2, $3)
		ON CONFLICT (did) DO UPDATE SET due_sec = excluded.due_sec, due_nsec = excluded.due_nsec`,
		did, due.Unix(), int32(due.Nanosecond()))
	return nil
}

func (t *tx) Dequeue(did string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	t.queue(`DELETE FROM cistern_queue WHERE did = $1`, did)
	return nil
}

func (t *tx) PutBuffer(c *store.BufferedCommit) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := checkField("buffered commit DID", c.DID); err != nil {
		return err
	}
	if c.Rev == "" {
		return fmt.Errorf("pgstore: buffered commit of %s: empty rev", c.DID)
	}
	data := c.Data
	if data == nil {
		data = []byte{}
	}
	t.queue(`INSERT INTO cistern_buffer (did, rev, seq, source, data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (did, rev) DO UPDATE SET seq = excluded.seq, source = excluded.source, data = excluded.data`,
		c.DID, c.Rev, c.Seq, c.Source, data)
	return nil
}

func (t *tx) DeleteBuffer(did, rev string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if rev == "" {
		t.queue(`DELETE FROM cistern_buffer WHERE did = $1`, did)
	} else {
		t.queue(`DELETE FROM cistern_buffer WHERE did = $1 AND rev = $2`, did, rev)
	}
	return nil
}

func (t *tx) PutMeta(key string, value []byte) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("pgstore: put meta: empty key")
	}
	if value == nil {
		value = []byte{}
	}
	t.queue(`INSERT INTO cistern_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		key, value)
	return nil
}

func (t *tx) DeleteMeta(key string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	t.queue(`DELETE FROM cistern_meta WHERE key = $1`, key)
	return nil
}
