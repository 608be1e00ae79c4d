package boltstore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/cistern-dev/cistern/store"
	bolt "go.etcd.io/bbolt"
)

// The backlink index (schema version 5). A source is a collection id and a
// path; lsrc below is lp(target) | collection id | lp(path), a prefix of no
// other source's.
//
//	links     lsrc | 0 | seq                → repo id | rkey
//	          lsrc | 1 | repo id            → uint64 links of the repo to it
//	linksrc   lsrc                          → records (8) | distinct repos (8)
//	reclinks  repo id | collection "/" rkey → uvarint seq | uvarint n |
//	                                          n × (uvarint len | target,
//	                                               uvarint len | path)
//
// reclinks is the forward index: what PutLinks stored for a record, so that
// the next PutLinks or DeleteRecord removes exactly those entries. linksrc
// and the per-repo counts keep the counts exact without scanning: a
// source's record count changes with each entry, its distinct-repo count
// when a repo's count appears or reaches zero. The per-repo counts sit
// beside the source's entries, so that indexing a link dirties two pages
// (links and linksrc) rather than three. The total number of entries is
// the sys counter count/links.

// maxLinkKey bounds lp(target) + lp(path) of one link: bbolt keys are at
// most 32 KiB.
const maxLinkKey = 16 << 10

var keyLinks = []byte("count/links")

// Kinds of keys in links, after lsrc.
const (
	linkEntry   = 0
	linkPerRepo = 1
)

// appendLinkSource appends lsrc.
func appendLinkSource(k []byte, target string, collID uint32, path string) []byte {
	k = appendLP(k, target)
	k = appendID(k, collID)
	return appendLP(k, path)
}

// checkLink refuses a link whose fields cannot be keys.
func checkLink(l store.Link) error {
	if l.Target == "" {
		return fmt.Errorf("boltstore: put links: empty target")
	}
	if 4+len(l.Target)+len(l.Path) > maxLinkKey {
		return fmt.Errorf("boltstore: put links: target and path of %d bytes, longer than %d", len(l.Target)+len(l.Path), maxLinkKey-4)
	}
	return nil
}

// ScanBacklinks implements store.ReadTx.
func (t *tx) ScanBacklinks(q store.BacklinkScan, fn func(b *store.Backlink) (bool, error)) error {
	collID, ok, err := t.collID(q.Collection, false)
	if err != nil || !ok || q.Target == "" || 4+len(q.Target)+len(q.Path) > maxLinkKey {
		return err
	}
	prefix := append(appendLinkSource(nil, q.Target, collID, q.Path), linkEntry)
	c := t.links.Cursor()
	var k, v []byte
	switch {
	case q.Reverse:
		k, v = c.Seek(binary.BigEndian.AppendUint64(clone(prefix), q.After+1))
		if q.After == ^uint64(0) {
			k = nil
		}
	case q.After == 0:
		k, v = seekBefore(c, prefixEnd(prefix))
	default:
		k, v = seekBefore(c, binary.BigEndian.AppendUint64(clone(prefix), q.After))
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = stepLinks(c, q.Reverse) {
		if len(k) != len(prefix)+8 || len(v) < idLen {
			return fmt.Errorf("boltstore: backlink %x: %w", k, errMalformed)
		}
		did, err := t.didName(binary.BigEndian.Uint32(v))
		if err != nil {
			return err
		}
		b := &store.Backlink{DID: did, Collection: q.Collection, RKey: string(v[idLen:]),
			Path: q.Path, Seq: binary.BigEndian.Uint64(k[len(prefix):])}
		if more, err := fn(b); err != nil || !more {
			return err
		}
	}
	return nil
}

// seekBefore positions c on the greatest key less than key (the last key
// when key is nil).
func seekBefore(c *bolt.Cursor, key []byte) ([]byte, []byte) {
	if key == nil {
		return c.Last()
	}
	if k, _ := c.Seek(key); k == nil {
		return c.Last()
	}
	return c.Prev()
}

// stepLinks moves a cursor forward, or back when reverse is false
// (newest first).
func stepLinks(c *bolt.Cursor, reverse bool) ([]byte, []byte) {
	if reverse {
		return c.Next()
	}
	return c.Prev()
}

// CountBacklinks implements store.ReadTx.
func (t *tx) CountBacklinks(target, collection, path string) (store.BacklinkCount, error) {
	collID, ok, err := t.collID(collection, false)
	if err != nil || !ok || target == "" || 4+len(target)+len(path) > maxLinkKey {
		return store.BacklinkCount{}, err
	}
	return parseLinkCount(t.linkSrc.Get(appendLinkSource(nil, target, collID, path)))
}

func parseLinkCount(v []byte) (store.BacklinkCount, error) {
	if v == nil {
		return store.BacklinkCount{}, nil
	}
	if len(v) != 16 {
		return store.BacklinkCount{}, fmt.Errorf("boltstore: backlink count: %w", errMalformed)
	}
	return store.BacklinkCount{Records: int64(binary.BigEndian.Uint64(v)), DIDs: int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

// ScanLinkSources implements store.ReadTx.
func (t *tx) ScanLinkSources(target string, fn func(collection, path string, n store.BacklinkCount) (bool, error)) error {
	if target == "" || len(target) > maxLinkKey {
		return nil
	}
	type source struct {
		collection, path string
		n                store.BacklinkCount
	}
	var sources []source
	prefix := appendLP(nil, target)
	c := t.linkSrc.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		rest := k[len(prefix):]
		if len(rest) < idLen+2 || len(rest) != idLen+2+int(binary.BigEndian.Uint16(rest[idLen:])) {
			return fmt.Errorf("boltstore: backlink source %x: %w", k, errMalformed)
		}
		coll, err := t.collDict.name(binary.BigEndian.Uint32(rest))
		if err != nil {
			return err
		}
		n, err := parseLinkCount(v)
		if err != nil {
			return err
		}
		sources = append(sources, source{coll, string(rest[idLen+2:]), n})
	}
	slices.SortFunc(sources, func(a, b source) int {
		return cmp.Or(strings.Compare(a.collection, b.collection), strings.Compare(a.path, b.path))
	})
	for _, s := range sources {
		if more, err := fn(s.collection, s.path, s.n); err != nil || !more {
			return err
		}
	}
	return nil
}

// PutLinks implements store.Tx.
func (t *tx) PutLinks(did, collection, rkey string, seq uint64, links []store.Link) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := store.ValidateLinks(did, collection, rkey, seq, links); err != nil {
		return fmt.Errorf("boltstore: put links: %w", err)
	}
	for _, l := range links {
		if err := checkLink(l); err != nil {
			return err
		}
	}
	if len(links) == 0 {
		id, ok, err := t.didID(did, false)
		if err != nil || !ok {
			return err
		}
		collID, ok, err := t.collID(collection, false)
		if err != nil || !ok {
			return err
		}
		return t.dropLinks(id, collID, appendRecordKey(nil, id, collection, rkey))
	}
	if err := checkField("record DID", did); err != nil {
		return err
	}
	if err := checkField("record collection", collection); err != nil {
		return err
	}
	id, _, err := t.didID(did, true)
	if err != nil {
		return fmt.Errorf("boltstore: put links: %w", err)
	}
	collID, _, err := t.collID(collection, true)
	if err != nil {
		return fmt.Errorf("boltstore: put links: %w", err)
	}
	rk := appendRecordKey(nil, id, collection, rkey)
	if err := t.dropLinks(id, collID, rk); err != nil {
		return err
	}
	links = slices.Clone(links)
	slices.SortFunc(links, func(a, b store.Link) int {
		return cmp.Or(strings.Compare(a.Target, b.Target), strings.Compare(a.Path, b.Path))
	})
	links = slices.Compact(links)
	n := binary.MaxVarintLen64 * 2
	for _, l := range links {
		n += 2*binary.MaxVarintLen64 + len(l.Target) + len(l.Path)
	}
	fwd := t.alloc(n)[:0]
	fwd = binary.AppendUvarint(fwd, seq)
	fwd = binary.AppendUvarint(fwd, uint64(len(links)))
	for _, l := range links {
		fwd = binary.AppendUvarint(fwd, uint64(len(l.Target)))
		fwd = append(fwd, l.Target...)
		fwd = binary.AppendUvarint(fwd, uint64(len(l.Path)))
		fwd = append(fwd, l.Path...)
		if err := t.addLink(l, collID, seq, id, rkey); err != nil {
			return err
		}
	}
	return t.recLinks.Put(rk, fwd)
}

// addLink adds one entry of the index and counts it.
func (t *tx) addLink(l store.Link, collID uint32, seq uint64, id uint32, rkey string) error {
	src := appendLinkSource(t.alloc(4 + len(l.Target) + idLen + len(l.Path))[:0], l.Target, collID, l.Path)
	k := append(append(t.alloc(len(src) + 9)[:0], src...), linkEntry)
	k = binary.BigEndian.AppendUint64(k, seq)
	v := appendByCollValue(t.alloc(idLen + len(rkey))[:0], id, rkey)
	if err := t.links.Put(k, v); err != nil {
		return err
	}
	return t.countLink(src, id, 1)
}

// countLink changes the counts of a source by one entry of repo id.
func (t *tx) countLink(src []byte, id uint32, d int64) error {
	dk := appendID(append(append(t.alloc(len(src) + 1 + idLen)[:0], src...), linkPerRepo), id)
	perRepo := int64(getU64(t.links.Get(dk))) + d
	var dids int64
	switch {
	case perRepo <= 0:
		if perRepo < 0 {
			t.db.log.Warn("boltstore: backlink repo count went negative; clamped to 0", "key", fmt.Sprintf("%x", dk))
		}
		if err := t.links.Delete(dk); err != nil {
			return err
		}
		if perRepo == 0 {
			dids = -1
		}
	default:
		if err := t.links.Put(dk, u64(uint64(perRepo))); err != nil {
			return err
		}
		if perRepo == 1 && d > 0 {
			dids = 1
		}
	}
	n, err := parseLinkCount(t.linkSrc.Get(src))
	if err != nil {
		return err
	}
	n.Records += d
	n.DIDs += dids
	if n.Records <= 0 {
		if n.Records < 0 || n.DIDs != 0 {
			t.db.log.Warn("boltstore: backlink count went negative; clamped to 0", "key", fmt.Sprintf("%x", src), "records", n.Records, "dids", n.DIDs)
		}
		if err := t.linkSrc.Delete(src); err != nil {
			return err
		}
	} else {
		v := t.alloc(16)[:0]
		v = binary.BigEndian.AppendUint64(v, uint64(n.Records))
		v = binary.BigEndian.AppendUint64(v, uint64(max(n.DIDs, 0)))
		if err := t.linkSrc.Put(src, v); err != nil {
			return err
		}
	}
	t.counts.links += d
	t.counts.dirty = true
	return nil
}

// dropLinks removes the links the record (rk, in repo id and collection
// collID) holds, as its reclinks entry lists them.
func (t *tx) dropLinks(id, collID uint32, rk []byte) error {
	fwd := t.recLinks.Get(rk)
	if fwd == nil {
		return nil
	}
	r := reader{b: fwd}
	seq := r.uvarint()
	n := r.uvarint()
	if r.bad || n > uint64(len(fwd)) {
		return fmt.Errorf("boltstore: record links %x: %w", rk, errMalformed)
	}
	for range n {
		target, path := r.bytes(), r.bytes()
		if r.bad {
			return fmt.Errorf("boltstore: record links %x: %w", rk, errMalformed)
		}
		src := appendLinkSource(nil, string(target), collID, string(path))
		if err := t.links.Delete(binary.BigEndian.AppendUint64(append(clone(src), linkEntry), seq)); err != nil {
			return err
		}
		if err := t.countLink(src, id, -1); err != nil {
			return err
		}
	}
	return t.recLinks.Delete(rk)
}
