package testnet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"

	"github.com/bluesky-social/indigo/atproto/repo/mst"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	blockstore "github.com/ipfs/go-ipfs-blockstore"
	ipld "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"
)

// blockMap is a small map-backed block store. It implements the parts of
// blockstore.Blockstore that mst.Tree.WriteDiffBlocks and
// mst.LoadTreeFromStore use, and keeps the CIDs it was given (a
// datastore-backed blockstore would hand back raw-codec CIDs).
//
// It is not safe for concurrent use; callers hold the owning account's lock.
type blockMap struct {
	m     map[cid.Cid][]byte
	order []cid.Cid // insertion order, for diff CARs
}

var _ blockstore.Blockstore = (*blockMap)(nil)

func newBlockMap(n int) *blockMap {
	return &blockMap{m: make(map[cid.Cid][]byte, n)}
}

func (b *blockMap) put(c cid.Cid, data []byte) {
	if _, ok := b.m[c]; ok {
		return
	}
	b.m[c] = data
	b.order = append(b.order, c)
}

func (b *blockMap) DeleteBlock(_ context.Context, c cid.Cid) error {
	delete(b.m, c)
	return nil
}

func (b *blockMap) Has(_ context.Context, c cid.Cid) (bool, error) {
	_, ok := b.m[c]
	return ok, nil
}

func (b *blockMap) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	data, ok := b.m[c]
	if !ok {
		return nil, &ipld.ErrNotFound{Cid: c}
	}
	return blocks.NewBlockWithCid(data, c)
}

func (b *blockMap) GetSize(_ context.Context, c cid.Cid) (int, error) {
	data, ok := b.m[c]
	if !ok {
		return -1, &ipld.ErrNotFound{Cid: c}
	}
	return len(data), nil
}

func (b *blockMap) Put(_ context.Context, blk blocks.Block) error {
	b.put(blk.Cid(), blk.RawData())
	return nil
}

func (b *blockMap) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, blk := range blks {
		b.put(blk.Cid(), blk.RawData())
	}
	return nil
}

func (b *blockMap) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	return nil, errors.New("testnet: AllKeysChan not supported")
}

func (b *blockMap) HashOnRead(bool) {}

var _ mst.MSTBlockSource = (*blockMap)(nil)

// cborCID computes the CIDv1 (dag-cbor, sha2-256) of a DAG-CBOR block.
func cborCID(data []byte) cid.Cid {
	c, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(data)
	if err != nil {
		// Sum only fails for unknown hash functions.
		panic("testnet: sha2-256 CID: " + err.Error())
	}
	return c
}

// rawCID computes the CIDv1 (raw, sha2-256) of an opaque block.
func rawCID(data []byte) cid.Cid {
	c, err := cid.NewPrefixV1(cid.Raw, multihash.SHA2_256).Sum(data)
	if err != nil {
		panic("testnet: sha2-256 CID: " + err.Error())
	}
	return c
}

// carBlock is one block of a CAR file.
type carBlock struct {
	cid  cid.Cid
	data []byte
}

// writeCAR writes a CARv1 with the given root and blocks to w.
// In-memory buffers are written directly; other writers (HTTP responses)
// through a 32 KiB buffer.
func writeCAR(w io.Writer, root cid.Cid, blks []carBlock) error {
	if buf, ok := w.(*bytes.Buffer); ok {
		return writeCARBlocks(buf, root, blks)
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	if err := writeCARBlocks(bw, root, blks); err != nil {
		return err
	}
	return bw.Flush()
}

// writeCARNoRoots writes a CARv1 without roots, as the reference PDS answers
// getBlocks, through a 32 KiB buffer.
func writeCARNoRoots(w io.Writer, blks []carBlock) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	if err := writeCARWithRoots(bw, []cid.Cid{}, blks); err != nil {
		return err
	}
	return bw.Flush()
}

func writeCARBlocks(w io.Writer, root cid.Cid, blks []carBlock) error {
	return writeCARWithRoots(w, []cid.Cid{root}, blks)
}

func writeCARWithRoots(w io.Writer, roots []cid.Cid, blks []carBlock) error {
	if err := car.WriteHeader(&car.CarHeader{Roots: roots, Version: 1}, w); err != nil {
		return err
	}
	for _, b := range blks {
		if err := carutil.LdWrite(w, b.cid.Bytes(), b.data); err != nil {
			return err
		}
	}
	return nil
}
