package pgstore

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/cistern-dev/cistern/store"
)

// The backlink index: see linksSQL for the tables.

// linkOp is a replacement of a record's links (PutLinks; none for
// DeleteRecord), queued. The statement answers the links the record had
// (answered tells it did); resolveLinks derives the rest from the
// difference.
type linkOp struct {
	did, coll, rkey string
	seq             int64
	links           []store.Link // sorted, no duplicates

	oldSeq               *int64
	oldTargets, oldPaths []string
	answered             bool
}

// readOld reads the answer of a queued link write: the record's links
// before it, or NULLs.
func (op *linkOp) readOld(br pgx.BatchResults) error {
	if err := br.QueryRow().Scan(&op.oldTargets, &op.oldPaths, &op.oldSeq); err != nil {
		return fmt.Errorf("links of %s/%s/%s: %w", op.did, op.coll, op.rkey, err)
	}
	if len(op.oldTargets) != len(op.oldPaths) {
		return fmt.Errorf("links of %s/%s/%s: %d targets for %d paths", op.did, op.coll, op.rkey, len(op.oldTargets), len(op.oldPaths))
	}
	op.answered = true
	return nil
}

// PutLinks implements store.Tx. The write is queued; its effects on the
// reverse index and the counters are derived before the next read of the
// index and at commit (resolveLinks).
func (t *tx) PutLinks(did, collection, rkey string, seq uint64, links []store.Link) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := store.ValidateLinks(did, collection, rkey, seq, links); err != nil {
		return fmt.Errorf("pgstore: put links: %w", err)
	}
	if seq > math.MaxInt64 {
		return fmt.Errorf("pgstore: put links of %s/%s/%s: position %d out of range", did, collection, rkey, seq)
	}
	if len(links) == 0 {
		t.removeLinks(did, collection, rkey)
		return nil
	}
	sorted := slices.Clone(links)
	slices.SortFunc(sorted, compareLinks)
	sorted = slices.Compact(sorted)
	targets := make([]string, len(sorted))
	paths := make([]string, len(sorted))
	for i, l := range sorted {
		targets[i], paths[i] = l.Target, l.Path
	}
	op := &linkOp{did: did, coll: collection, rkey: rkey, seq: int64(seq), links: sorted}
	t.queueWith(op.readOld, `WITH old AS (SELECT targets, paths, seq FROM cistern_links WHERE did = $1 AND collection = $2 AND rkey = $3),
		up AS (INSERT INTO cistern_links (did, collection, rkey, seq, targets, paths) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (did, collection, rkey) DO UPDATE SET seq = excluded.seq, targets = excluded.targets, paths = excluded.paths)
		SELECT (SELECT targets FROM old), (SELECT paths FROM old), (SELECT seq FROM old)`,
		did, collection, rkey, int64(seq), targets, paths)
	t.linkOps = append(t.linkOps, op)
	return nil
}

// removeLinks queues the removal of a record's links.
func (t *tx) removeLinks(did, collection, rkey string) {
	op := &linkOp{did: did, coll: collection, rkey: rkey}
	t.queueWith(op.readOld, `WITH del AS (DELETE FROM cistern_links WHERE did = $1 AND collection = $2 AND rkey = $3
			RETURNING targets, paths, seq)
		SELECT (SELECT targets FROM del), (SELECT paths FROM del), (SELECT seq FROM del)`, did, collection, rkey)
	t.linkOps = append(t.linkOps, op)
}

func compareLinks(a, b store.Link) int {
	return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Path, b.Path))
}

// linkSource is one source of a target: the key of cistern_link_counts.
type linkSource struct{ target, coll, path string }

// linkDID is a key of cistern_link_dids.
type linkDID struct {
	linkSource
	did string
}

// backlinkKey is a key of cistern_backlinks.
type backlinkKey struct {
	linkSource
	seq       int64
	did, rkey string
}

// resolveLinks sends the queued link writes, and from what they answer
// writes the reverse index and the per-DID counts (one round trip, whose
// answers say which DIDs appeared or disappeared), then queues the changes
// to the per-source counts. Rows added go in one statement per table
// (INSERT … SELECT FROM unnest); rows removed, one statement each.
func (t *tx) resolveLinks() error {
	if len(t.linkOps) == 0 {
		return nil
	}
	if t.queued != nil && t.queued.Len() > 0 {
		if err := t.flush(false); err != nil {
			return err
		}
	}
	ops := t.linkOps
	t.linkOps = nil
	// The net changes, in the order first touched: to the reverse rows
	// (+1 added, -1 removed, 0 both), and to the per-DID record counts.
	rows := map[backlinkKey]int64{}
	var rowOrder []backlinkKey
	perDID := map[linkDID]int64{}
	var didOrder []linkDID
	row := func(k backlinkKey, d int64) {
		if _, ok := rows[k]; !ok {
			rowOrder = append(rowOrder, k)
		}
		rows[k] += d
	}
	count := func(k linkDID, d int64) {
		if _, ok := perDID[k]; !ok {
			didOrder = append(didOrder, k)
		}
		perDID[k] += d
		t.counts.links += d
	}
	for _, op := range ops {
		if !op.answered {
			return fmt.Errorf("pgstore: internal error: a link write was not answered")
		}
		var oldSeq int64
		if op.oldSeq != nil {
			oldSeq = *op.oldSeq
		}
		old := make(map[store.Link]bool, len(op.oldTargets))
		for i := range op.oldTargets {
			old[store.Link{Target: op.oldTargets[i], Path: op.oldPaths[i]}] = true
		}
		for i := range op.oldTargets {
			l := store.Link{Target: op.oldTargets[i], Path: op.oldPaths[i]}
			_, kept := slices.BinarySearchFunc(op.links, l, compareLinks)
			if kept && oldSeq == op.seq {
				continue
			}
			src := linkSource{l.Target, op.coll, l.Path}
			row(backlinkKey{src, oldSeq, op.did, op.rkey}, -1)
			if !kept {
				count(linkDID{src, op.did}, -1)
			}
		}
		for _, l := range op.links {
			had := old[l]
			if had && oldSeq == op.seq {
				continue
			}
			src := linkSource{l.Target, op.coll, l.Path}
			row(backlinkKey{src, op.seq, op.did, op.rkey}, 1)
			if !had {
				count(linkDID{src, op.did}, 1)
			}
		}
	}
	var add columns
	for _, k := range rowOrder {
		switch rows[k] {
		case -1:
			t.queue(`DELETE FROM cistern_backlinks WHERE target = $1 AND collection = $2 AND path = $3 AND seq = $4 AND did = $5 AND rkey = $6`,
				k.target, k.coll, k.path, k.seq, k.did, k.rkey)
		case 1:
			add.source(k.linkSource)
			add.seq = append(add.seq, k.seq)
			add.did = append(add.did, k.did)
			add.rkey = append(add.rkey, k.rkey)
		}
	}
	if len(add.seq) > 0 {
		t.queue(`INSERT INTO cistern_backlinks (target, collection, path, seq, did, rkey)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])`,
			add.target, add.coll, add.path, add.seq, add.did, add.rkey)
	}
	// The per-DID counts; a DID appears in a source when its count leaves
	// 0, and disappears when it returns to 0 (and its row is deleted).
	records := map[linkSource]int64{}
	dids := map[linkSource]int64{}
	var sources []linkSource
	var up columns
	for _, k := range didOrder {
		d := perDID[k]
		if d == 0 {
			continue
		}
		if _, ok := records[k.linkSource]; !ok {
			sources = append(sources, k.linkSource)
		}
		records[k.linkSource] += d
		up.source(k.linkSource)
		up.did = append(up.did, k.did)
		up.n = append(up.n, d)
	}
	var gone []linkDID
	if len(up.n) > 0 {
		t.queueWith(func(br pgx.BatchResults) error {
			res, err := br.Query()
			if err != nil {
				return err
			}
			defer res.Close()
			for res.Next() {
				var k linkDID
				var n int64
				if err := res.Scan(&k.target, &k.coll, &k.path, &k.did, &n); err != nil {
					return err
				}
				switch before := n - perDID[k]; {
				case before <= 0 && n > 0:
					dids[k.linkSource]++
				case before > 0 && n <= 0:
					dids[k.linkSource]--
				}
				if n <= 0 {
					gone = append(gone, k)
				}
			}
			return res.Err()
		}, `INSERT INTO cistern_link_dids (target, collection, path, did, n)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
			ON CONFLICT (target, collection, path, did) DO UPDATE SET n = cistern_link_dids.n + excluded.n
			RETURNING target, collection, path, did, n`, up.target, up.coll, up.path, up.did, up.n)
	}
	if err := t.flush(false); err != nil {
		return err
	}
	for _, k := range gone {
		t.queue(`DELETE FROM cistern_link_dids WHERE target = $1 AND collection = $2 AND path = $3 AND did = $4 AND n <= 0`,
			k.target, k.coll, k.path, k.did)
	}
	var counts columns
	for _, src := range sources {
		r, d := records[src], dids[src]
		if r == 0 && d == 0 {
			continue
		}
		counts.source(src)
		counts.n = append(counts.n, r)
		counts.n2 = append(counts.n2, d)
	}
	if len(counts.n) > 0 {
		t.queue(`INSERT INTO cistern_link_counts (target, collection, path, records, dids)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
			ON CONFLICT (target, collection, path) DO UPDATE SET records = cistern_link_counts.records + excluded.records,
				dids = cistern_link_counts.dids + excluded.dids`, counts.target, counts.coll, counts.path, counts.n, counts.n2)
	}
	for i, r := range counts.n {
		if r < 0 {
			t.queue(`DELETE FROM cistern_link_counts WHERE target = $1 AND collection = $2 AND path = $3 AND records <= 0`,
				counts.target[i], counts.coll[i], counts.path[i])
		}
	}
	return nil
}

// columns holds the rows of a multi-row statement as one array per
// column, for unnest.
type columns struct {
	target, coll, path, did, rkey []string
	seq, n, n2                    []int64
}

func (c *columns) source(s linkSource) {
	c.target = append(c.target, s.target)
	c.coll = append(c.coll, s.coll)
	c.path = append(c.path, s.path)
}

// ScanBacklinks implements store.ReadTx.
func (t *tx) ScanBacklinks(q store.BacklinkScan, fn func(b *store.Backlink) (bool, error)) error {
	if q.Reverse && q.After >= math.MaxInt64 {
		return nil
	}
	// The first page starts strictly after q.After; the next ones after
	// the last row, (seq, did, rkey), as records may share a position.
	const cols = `SELECT did, rkey, seq FROM cistern_backlinks WHERE target = $1 AND collection = $2 AND path = $3`
	first, next, order := cols+` AND seq > $4`, cols+` AND (seq, did, rkey) > ($4, $5, $6)`, `seq, did, rkey`
	if !q.Reverse {
		first, next, order = cols+` AND seq < $4`, cols+` AND (seq, did, rkey) < ($4, $5, $6)`, `seq DESC, did DESC, rkey DESC`
		if q.After == 0 || q.After > math.MaxInt64 {
			first = cols
		}
	}
	return scanPages(func(last *store.Backlink) ([]store.Backlink, error) {
		sql, args := first, []any{q.Target, q.Collection, q.Path}
		if last != nil {
			sql, args = next, append(args, int64(last.Seq), last.DID, last.RKey)
		} else if sql != cols {
			args = append(args, int64(q.After))
		}
		args = append(args, pageSize)
		var page []store.Backlink
		err := t.query(true, fmt.Sprintf(`%s ORDER BY %s LIMIT $%d`, sql, order, len(args)), args, func(rows pgx.Rows) error {
			b := store.Backlink{Collection: q.Collection, Path: q.Path}
			var seq int64
			if err := rows.Scan(&b.DID, &b.RKey, &seq); err != nil {
				return err
			}
			b.Seq = uint64(seq)
			page = append(page, b)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan backlinks to %s from %s:%s: %w", q.Target, q.Collection, q.Path, err)
		}
		return page, nil
	}, func(b store.Backlink) (bool, error) { return fn(&b) })
}

// CountBacklinks implements store.ReadTx.
func (t *tx) CountBacklinks(target, collection, path string) (store.BacklinkCount, error) {
	var n store.BacklinkCount
	err := t.query(true, `SELECT records, dids FROM cistern_link_counts WHERE target = $1 AND collection = $2 AND path = $3`,
		[]any{target, collection, path}, func(rows pgx.Rows) error { return rows.Scan(&n.Records, &n.DIDs) })
	if err != nil {
		return store.BacklinkCount{}, fmt.Errorf("pgstore: count backlinks to %s from %s:%s: %w", target, collection, path, err)
	}
	return n, nil
}

// ScanLinkSources implements store.ReadTx.
func (t *tx) ScanLinkSources(target string, fn func(collection, path string, n store.BacklinkCount) (bool, error)) error {
	type source struct {
		coll, path string
		n          store.BacklinkCount
	}
	return scanPages(func(last *source) ([]source, error) {
		sql := `SELECT collection, path, records, dids FROM cistern_link_counts WHERE target = $1 ORDER BY collection, path LIMIT $2`
		args := []any{target, pageSize}
		if last != nil {
			sql = `SELECT collection, path, records, dids FROM cistern_link_counts WHERE target = $1 AND (collection, path) > ($3, $4)
				ORDER BY collection, path LIMIT $2`
			args = append(args, last.coll, last.path)
		}
		var page []source
		err := t.query(true, sql, args, func(rows pgx.Rows) error {
			var s source
			if err := rows.Scan(&s.coll, &s.path, &s.n.Records, &s.n.DIDs); err != nil {
				return err
			}
			page = append(page, s)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("pgstore: scan link sources of %s: %w", target, err)
		}
		return page, nil
	}, func(s source) (bool, error) { return fn(s.coll, s.path, s.n) })
}
