package testnet

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
)

// walkMST walks the MST rooted at root, decoding nodes from bs. It calls
// node (if not nil) for every node block, and leaf for every key in key
// order.
func walkMST(bs *blockMap, root cid.Cid, node func(cid.Cid, []byte), leaf func(key []byte, val cid.Cid) error) error {
	return walkNode(bs, root, node, leaf)
}

func walkNode(bs *blockMap, c cid.Cid, node func(cid.Cid, []byte), leaf func([]byte, cid.Cid) error) error {
	data, ok := bs.m[c]
	if !ok {
		return fmt.Errorf("testnet: MST node %s missing", c)
	}
	if node != nil {
		node(c, data)
	}
	nd, err := mst.NodeDataFromCBOR(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("testnet: MST node %s: %w", c, err)
	}
	if nd.Left != nil {
		if err := walkNode(bs, *nd.Left, node, leaf); err != nil {
			return err
		}
	}
	var key []byte
	for _, e := range nd.Entries {
		if int(e.PrefixLen) > len(key) {
			return fmt.Errorf("testnet: MST node %s: bad prefix length", c)
		}
		key = append(key[:e.PrefixLen:e.PrefixLen], e.KeySuffix...)
		if err := leaf(key, e.Value); err != nil {
			return err
		}
		if e.Right != nil {
			if err := walkNode(bs, *e.Right, node, leaf); err != nil {
				return err
			}
		}
	}
	return nil
}

// getMST looks key up in the MST rooted at root without loading the tree.
func getMST(bs *blockMap, root cid.Cid, key []byte) (*cid.Cid, error) {
	c := root
	for {
		data, ok := bs.m[c]
		if !ok {
			return nil, fmt.Errorf("testnet: MST node %s missing", c)
		}
		nd, err := mst.NodeDataFromCBOR(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		next := nd.Left
		var k []byte
		found := false
		for _, e := range nd.Entries {
			if int(e.PrefixLen) > len(k) {
				return nil, fmt.Errorf("testnet: MST node %s: bad prefix length", c)
			}
			k = append(k[:e.PrefixLen:e.PrefixLen], e.KeySuffix...)
			switch cmp := bytes.Compare(key, k); {
			case cmp == 0:
				v := e.Value
				return &v, nil
			case cmp > 0:
				next = e.Right
			default:
				found = true
			}
			if found {
				break
			}
		}
		if next == nil {
			return nil, nil
		}
		c = *next
	}
}

type cidT = cid.Cid

// errStop ends a walk early.
var errStop = errors.New("testnet: stop walk")

// mstPath returns the MST nodes from root down to the node where key is,
// or would be: the nodes that looking key up, inserting or removing it
// read.
func mstPath(bs *blockMap, root cid.Cid, key []byte) ([]cid.Cid, error) {
	var path []cid.Cid
	c := root
	for {
		data, ok := bs.m[c]
		if !ok {
			return nil, fmt.Errorf("testnet: MST node %s missing", c)
		}
		path = append(path, c)
		nd, err := mst.NodeDataFromCBOR(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("testnet: MST node %s: %w", c, err)
		}
		next := nd.Left
		var k []byte
	entries:
		for _, e := range nd.Entries {
			if int(e.PrefixLen) > len(k) {
				return nil, fmt.Errorf("testnet: MST node %s: bad prefix length", c)
			}
			k = append(k[:e.PrefixLen:e.PrefixLen], e.KeySuffix...)
			switch cmp := bytes.Compare(key, k); {
			case cmp == 0:
				return path, nil
			case cmp > 0:
				next = e.Right
			default:
				break entries
			}
		}
		if next == nil {
			return path, nil
		}
		c = *next
	}
}
