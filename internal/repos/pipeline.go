package repos

import (
	"sync"

	"github.com/cistern-dev/cistern/store"
)

// Pipeline remembers, for each repo with live writes queued and not yet
// committed, the state those writes leave it in. The next live commit of
// the repo (internal/ingest) is verified against that state instead of
// waiting for the commit (and its fsync), so that consecutive commits of
// one repo share a transaction. Everything else that reads a repo's state
// to act on it first waits for its queued writes (Table.Lock, through
// Options.Pending), so the pipeline is seen only by live commits. It lives
// beside the lock that waits for it, so that waiting never calls up into
// the live path.
type Pipeline struct {
	mu    sync.Mutex
	repos map[string]*pipelined
	// failed counts, per repo, queued writes that failed and whose resync
	// is not yet queued: the repo's stored state is behind what its
	// firehose says, so its next commits are held rather than verified
	// against it (they would not chain).
	failed map[string]int
}

type pipelined struct {
	repo *store.Repo   // the state after the writes queued so far
	n    int           // writes queued and not yet reported
	idle chan struct{} // closed when n drops to 0
}

// NewPipeline returns an empty pipeline.
func NewPipeline() *Pipeline {
	return &Pipeline{repos: map[string]*pipelined{}, failed: map[string]int{}}
}

// Fail records that a queued write of did failed. Call it before Done for
// that write, so that no commit reads the store's state in between.
func (p *Pipeline) Fail(did string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed[did]++
}

// Recovered records that the resync after one failed write is queued.
func (p *Pipeline) Recovered(did string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed[did]--; p.failed[did] <= 0 {
		delete(p.failed, did)
	}
}

// AnyBroken reports whether a failed write of any repo awaits its resync;
// firehose cursors are held meanwhile.
func (p *Pipeline) AnyBroken() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.failed) > 0
}

// Broken reports whether a failed write of did awaits its resync.
func (p *Pipeline) Broken(did string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed[did] > 0
}

// Repo returns a copy of the state the repo's queued writes leave it in,
// or nil if none is queued.
func (p *Pipeline) Repo(did string) *store.Repo {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.repos[did]; e != nil {
		r := *e.repo
		return &r
	}
	return nil
}

// Queued records one more queued write of did leaving it in state r.
func (p *Pipeline) Queued(did string, r *store.Repo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.repos[did]
	if e == nil {
		e = &pipelined{idle: make(chan struct{})}
		p.repos[did] = e
	}
	e.repo = r
	e.n++
}

// Done records that one queued write of did was reported (committed or
// not). It never blocks.
func (p *Pipeline) Done(did string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.repos[did]
	if e == nil {
		return
	}
	if e.n--; e.n == 0 {
		delete(p.repos, did)
		close(e.idle)
	}
}

// Settle waits until no write of did is queued. The writer reports every
// Queued write (committed, failed or closed), so the wait ends.
func (p *Pipeline) Settle(did string) {
	p.mu.Lock()
	e := p.repos[did]
	p.mu.Unlock()
	if e != nil {
		<-e.idle
	}
}
