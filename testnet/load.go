package testnet

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LoadOptions describe a load generator started by Network.StartLoad.
type LoadOptions struct {
	// Rate is the target number of commits per second across all workers.
	// Zero or negative means as fast as possible.
	Rate float64
	// Accounts receive the commits, picked at random. Default: every
	// account of the network when the load starts.
	Accounts []*Account
	// Collection of created records. Default "app.bsky.feed.post".
	Collection string
	// Workers is how many goroutines write. Default GOMAXPROCS.
	Workers int
}

// Load is a running load generator; see Network.StartLoad. Stop it with
// Stop (Network.Close stops it too).
type Load struct {
	n       *Network
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	commits atomic.Int64
	errs    atomic.Int64
	once    sync.Once
}

// StartLoad starts goroutines that write commits to random accounts at
// o.Rate commits per second: mostly single-record creates, with updates
// and deletes of an existing record mixed in (about 20% and 10%). Commits
// that fail (for example on an account deactivated meanwhile) are counted
// by Errors and skipped.
func (n *Network) StartLoad(o LoadOptions) *Load {
	if len(o.Accounts) == 0 {
		o.Accounts = n.Accounts()
	}
	if o.Collection == "" {
		o.Collection = "app.bsky.feed.post"
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{n: n, cancel: cancel}
	n.loadMu.Lock()
	n.loads[l] = struct{}{}
	n.loadMu.Unlock()
	if len(o.Accounts) == 0 {
		return l
	}
	var tokens chan struct{}
	if o.Rate > 0 {
		tokens = make(chan struct{}, 4096)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer close(tokens)
			start := time.Now()
			var sent float64
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				due := time.Since(start).Seconds()*o.Rate - sent
				for ; due >= 1; due-- {
					select {
					case tokens <- struct{}{}:
						sent++
					case <-ctx.Done():
						return
					default:
						// Workers are behind: drop the token rather than
						// burst later.
						sent++
					}
				}
			}
		}()
	}
	for w := 0; w < o.Workers; w++ {
		l.wg.Add(1)
		go func(seed uint64) {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(seed, seed+1))
			for {
				if tokens != nil {
					select {
					case _, ok := <-tokens:
						if !ok {
							return
						}
					case <-ctx.Done():
						return
					}
				} else if ctx.Err() != nil {
					return
				}
				a := o.Accounts[rng.IntN(len(o.Accounts))]
				if err := l.writeOne(a, o.Collection, rng); err != nil {
					l.errs.Add(1)
				} else {
					l.commits.Add(1)
				}
			}
		}(rand.Uint64())
	}
	return l
}

func (l *Load) writeOne(a *Account, coll string, rng *rand.Rand) error {
	p := rng.IntN(10)
	if p < 3 {
		if rec, ok := a.someRecord(coll); ok {
			if p < 2 {
				// A distinct text each time: two updates to the same
				// value would make a commit that changes nothing, which
				// indexers rightly refuse.
				_, err := a.Apply(Update(coll, rec, Post(coll, "updated "+strconv.FormatUint(rng.Uint64(), 36))))
				return err
			}
			_, err := a.Apply(Delete(coll, rec))
			return err
		}
	}
	_, err := a.Apply(Create(coll, "", Post(coll, "load")))
	return err
}

// someRecord returns the rkey of the first record of coll, if any.
func (a *Account) someRecord(coll string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.collections[coll] == 0 || a.loadTreeLocked() != nil {
		return "", false
	}
	var found string
	_ = a.tree.Walk(func(k []byte, _ cidT) error {
		c, r := splitPath(string(k))
		if c == coll {
			found = r
			return errStop
		}
		return nil
	})
	return found, found != ""
}

// Commits returns how many commits the generator wrote so far.
func (l *Load) Commits() int64 { return l.commits.Load() }

// Errors returns how many commits failed.
func (l *Load) Errors() int64 { return l.errs.Load() }

// Stop stops the generator and waits for its goroutines. It is safe to call
// more than once.
func (l *Load) Stop() {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
		l.n.loadMu.Lock()
		delete(l.n.loads, l)
		l.n.loadMu.Unlock()
	})
}
