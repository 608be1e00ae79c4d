package testnet

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// Host is one PDS host of the network. It serves the sync and repo XRPC
// methods for the accounts it hosts, counts requests per method, and injects
// the faults a test asks for.
type Host struct {
	net      *Network
	index    int
	url      string
	counters counters
	faults   hostFaults
	served   servedBlocks
}

// URL returns the host's base URL (http://127.0.0.1:port).
func (h *Host) URL() string { return h.url }

// Requests returns how many requests the host received for the XRPC method
// nsid (for example "com.atproto.sync.getRepo"), faulted ones included. An
// empty nsid counts every XRPC request.
func (h *Host) Requests(nsid string) int64 { return h.counters.get(nsid) }

// RequestCounts returns the request count of every XRPC method called.
func (h *Host) RequestCounts() map[string]int64 { return h.counters.snapshot() }

// ResetRequests sets every request count back to zero and forgets the
// blocks served (ServedBlocks).
func (h *Host) ResetRequests() {
	h.counters.reset()
	h.served.reset()
}

// Accounts returns the accounts on this host (deleted ones included) in DID
// order.
func (h *Host) Accounts() []*Account {
	var out []*Account
	for _, a := range h.net.Accounts() {
		if a.Host() == h {
			out = append(out, a)
		}
	}
	return out
}

// AccountOption configures CreateAccount.
type AccountOption func(*accountOptions)

type accountOptions struct {
	records []recordSpec
}

type recordSpec struct {
	collection string
	n          int
}

// Records asks CreateAccount for n initial Post records in collection, with
// TID rkeys, emitted as #commit frames of at most 200 ops.
func Records(collection string, n int) AccountOption {
	return func(o *accountOptions) { o.records = append(o.records, recordSpec{collection, n}) }
}

// CreateAccount creates an account on the default host. See
// Host.CreateAccount.
func (n *Network) CreateAccount(handle string, opts ...AccountOption) (*Account, error) {
	return n.hosts[0].CreateAccount(handle, opts...)
}

// Account creates an account on the default host and fails t on error.
func (n *Network) Account(t testing.TB, handle string, opts ...AccountOption) *Account {
	t.Helper()
	a, err := n.CreateAccount(handle, opts...)
	if err != nil {
		t.Fatalf("testnet: create account %q: %v", handle, err)
	}
	return a
}

// CreateAccount creates an active account with a fresh DID and K-256 key
// and an empty signed repo on this host, registers its DID document with the
// PLC directory, and emits #identity, #account and #sync. An empty handle
// becomes "userN.test". Options add initial records.
func (h *Host) CreateAccount(handle string, opts ...AccountOption) (*Account, error) {
	var o accountOptions
	for _, f := range opts {
		f(&o)
	}
	hdl, err := h.net.handleFor(handle)
	if err != nil {
		return nil, err
	}
	did, key, err := h.net.newIdentity()
	if err != nil {
		return nil, err
	}
	a, err := newAccount(h, did, key, hdl)
	if err != nil {
		return nil, err
	}
	tree := mst.NewEmptyTree()
	root, err := tree.WriteDiffBlocks(context.Background(), a.blocks)
	if err != nil {
		return nil, err
	}
	a.tree = &tree
	a.mu.Lock()
	err = a.commitLocked(*root)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := h.net.register(a); err != nil {
		return nil, err
	}
	a.mu.Lock()
	_, err = a.emitIdentityLocked()
	if err == nil {
		_, err = a.emitAccountLocked()
	}
	if err == nil {
		_, err = a.emitSyncLocked()
	}
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, r := range o.records {
		if _, err := a.CreatePosts(r.collection, r.n); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func newAccount(h *Host, did syntax.DID, k *atcrypto.PrivateKeyK256, hdl syntax.Handle) (*Account, error) {
	pub, err := k.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("testnet: public key: %w", err)
	}
	return &Account{
		net:         h.net,
		host:        h,
		did:         did,
		key:         k,
		pub:         pub,
		handle:      hdl,
		status:      StatusActive,
		blocks:      newBlockMap(16),
		clock:       *syntax.NewTIDClock(0),
		collections: make(map[string]int),
	}, nil
}

// proof returns the commit, the MST nodes on the path to key and the record
// block: a com.atproto.sync.getRecord answer.
func (a *Account) proof(key []byte) (cid.Cid, []carBlock, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	blks := []carBlock{{a.commitCID, a.commitBytes}}
	c := a.commit.Data
	for {
		data, ok := a.blocks.m[c]
		if !ok {
			return cid.Undef, nil, false
		}
		blks = append(blks, carBlock{c, data})
		nd, err := mstNodeData(data)
		if err != nil {
			return cid.Undef, nil, false
		}
		next := nd.Left
		var k []byte
	entries:
		for _, e := range nd.Entries {
			if int(e.PrefixLen) > len(k) {
				return cid.Undef, nil, false
			}
			k = append(k[:e.PrefixLen:e.PrefixLen], e.KeySuffix...)
			switch cmp := bytes.Compare(key, k); {
			case cmp == 0:
				return a.commitCID, append(blks, carBlock{e.Value, a.blocks.m[e.Value]}), true
			case cmp > 0:
				next = e.Right
			default:
				break entries
			}
		}
		if next == nil {
			return cid.Undef, nil, false
		}
		c = *next
	}
}

func mstNodeData(data []byte) (*mst.NodeData, error) {
	return mst.NodeDataFromCBOR(bytes.NewReader(data))
}
