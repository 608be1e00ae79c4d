package testnet

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// GenerateOptions describe a bulk generation of accounts.
type GenerateOptions struct {
	// Accounts is how many accounts to create.
	Accounts int
	// Records is how many records each account holds. Default 0.
	Records int
	// Collections receive the records round-robin. Default
	// ["app.bsky.feed.post"].
	Collections []string
	// Hosts spreads the accounts round-robin over these hosts. Default: all
	// of the network's hosts.
	Hosts []*Host
	// Workers is how many goroutines build repos. Default GOMAXPROCS.
	Workers int
}

// Generate creates o.Accounts active accounts of o.Records Post records
// each (TID rkeys, {"$type","text","createdAt"} values), building each
// repo's MST directly from its sorted keys and signing one commit per repo.
// It emits no firehose frames: the accounts are there as if they existed
// before the relay's history. Handles are "gN.test" (N counts across calls).
// It returns the accounts in creation order.
func (n *Network) Generate(ctx context.Context, o GenerateOptions) ([]*Account, error) {
	if o.Accounts <= 0 {
		return nil, nil
	}
	if len(o.Collections) == 0 {
		o.Collections = []string{"app.bsky.feed.post"}
	}
	for _, c := range o.Collections {
		if _, err := syntax.ParseNSID(c); err != nil {
			return nil, fmt.Errorf("testnet: generate: collection %q: %w", c, err)
		}
	}
	if len(o.Hosts) == 0 {
		o.Hosts = n.hosts
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	accts := make([]*Account, o.Accounts)
	seeds := make([][32]byte, o.Accounts)
	handles := make([]syntax.Handle, o.Accounts)
	for i := range seeds {
		seeds[i] = n.newSeed()
		n.mu.Lock()
		n.nextUser++
		handles[i] = syntax.Handle("g" + strconv.Itoa(n.nextUser) + ".test")
		n.mu.Unlock()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, o.Workers)
	base := time.Now().Add(-time.Hour)
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			g := newGenerator(o.Records)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(accts) || ctx.Err() != nil {
					return
				}
				did, key, err := identityFromSeed(seeds[i])
				if err == nil {
					accts[i], err = newAccount(o.Hosts[i%len(o.Hosts)], did, key, handles[i])
				}
				if err == nil {
					err = g.fill(accts[i], o.Collections, o.Records, base, uint(i))
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	n.mu.Lock()
	for _, a := range accts {
		if _, dup := n.accounts[a.did]; dup {
			n.mu.Unlock()
			return nil, fmt.Errorf("testnet: generate: DID %s already exists", a.did)
		}
		n.accounts[a.did] = a
		n.order = append(n.order, a.did)
	}
	slices.Sort(n.order)
	n.mu.Unlock()
	return accts, nil
}

// generator holds one worker's scratch space.
type generator struct {
	items []mstItem
	buf   []byte
}

type mstItem struct {
	key    []byte
	val    cid.Cid
	height int
}

func newGenerator(records int) *generator {
	return &generator{items: make([]mstItem, 0, records)}
}

func (g *generator) fill(a *Account, colls []string, records int, base time.Time, clock uint) error {
	g.items = g.items[:0]
	a.blocks = newBlockMap(records + records/3 + 4)
	createdAt := base.UTC().Format("2006-01-02T15:04:05.000Z")
	for i := 0; i < records; i++ {
		coll := colls[i%len(colls)]
		rkey := syntax.NewTID(base.UnixMicro()+int64(i), clock%1024).String()
		val := postCBOR(make([]byte, 0, 64+len(coll)), coll, "post "+strconv.Itoa(i), createdAt)
		c := cborCID(val)
		a.blocks.put(c, val)
		key := []byte(coll + "/" + rkey)
		g.items = append(g.items, mstItem{key: key, val: c, height: mst.HeightForKey(key)})
		a.collections[coll]++
	}
	slices.SortFunc(g.items, func(x, y mstItem) int { return compareBytes(x.key, y.key) })
	a.blocks.order = nil
	root, err := buildMST(a.blocks, g.items)
	if err != nil {
		return err
	}
	a.nrecords = records
	a.blocks.order = nil
	a.live = len(a.blocks.m)
	a.clock = *syntax.NewTIDClock(clock % 1024)
	return a.signInitial(root)
}

func (a *Account) signInitial(root cid.Cid) error {
	c := repo.Commit{DID: a.did.String(), Version: repo.ATPROTO_REPO_VERSION, Data: root, Rev: a.clock.Next().String()}
	raw, cc, err := signCommit(&c, a.key)
	if err != nil {
		return err
	}
	a.commit, a.commitCID, a.commitBytes = c, cc, raw
	return nil
}

func compareBytes(a, b []byte) int {
	return slices.Compare(a, b)
}

// buildMST writes the MST of items (sorted by key, heights computed) to bs
// and returns its root CID. It builds each node once, bottom-up.
func buildMST(bs *blockMap, items []mstItem) (cid.Cid, error) {
	top := 0
	for _, it := range items {
		top = max(top, it.height)
	}
	return buildLevel(bs, items, top)
}

func buildLevel(bs *blockMap, items []mstItem, height int) (cid.Cid, error) {
	nd := mst.NodeData{Entries: make([]mst.EntryData, 0, 8)}
	var prev []byte
	attach := func(sub []mstItem) error {
		if len(sub) == 0 {
			return nil
		}
		child, err := buildLevel(bs, sub, height-1)
		if err != nil {
			return err
		}
		if len(nd.Entries) == 0 {
			nd.Left = &child
		} else {
			nd.Entries[len(nd.Entries)-1].Right = &child
		}
		return nil
	}
	start := 0
	for i, it := range items {
		if it.height != height {
			continue
		}
		if err := attach(items[start:i]); err != nil {
			return cid.Undef, err
		}
		p := mst.CountPrefixLen(prev, it.key)
		nd.Entries = append(nd.Entries, mst.EntryData{PrefixLen: int64(p), KeySuffix: it.key[p:], Value: it.val})
		prev = it.key
		start = i + 1
	}
	if err := attach(items[start:]); err != nil {
		return cid.Undef, err
	}
	data, c, err := nd.Bytes()
	if err != nil {
		return cid.Undef, err
	}
	bs.put(*c, data)
	return *c, nil
}
