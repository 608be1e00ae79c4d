package backfill

import (
	"container/list"
	"context"
	"sync"
)

// budget is a weighted semaphore over bytes with first-come first-served
// admission: a large request at the head of the line is not overtaken by
// smaller ones, so it is never starved. A request is granted whole or not
// at all; nobody holds part of the budget while waiting for more.
type budget struct {
	mu      sync.Mutex
	size    int64
	used    int64
	peak    int64
	waiters list.List // of *budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newBudget(size int64) *budget { return &budget{size: size} }

// clamp bounds a request to the whole budget, so that a repo larger than
// the budget can still run (alone).
func (b *budget) clamp(n int64) int64 {
	if n > b.size {
		return b.size
	}
	if n < 0 {
		return 0
	}
	return n
}

// acquire waits until n bytes (at most the whole budget) are free and takes
// them, or returns ctx's error having taken nothing.
func (b *budget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if b.waiters.Len() == 0 && b.used+n <= b.size {
		b.take(n)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	el := b.waiters.PushBack(w)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready:
			// Granted meanwhile: give it back.
			b.used -= n
			b.notify()
		default:
			b.waiters.Remove(el)
			// The head may have changed: later waiters may now fit.
			b.notify()
		}
		b.mu.Unlock()
		return ctx.Err()
	}
}

func (b *budget) take(n int64) {
	b.used += n
	if b.used > b.peak {
		b.peak = b.used
	}
}

// release returns n bytes.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.notify()
	b.mu.Unlock()
}

// notify grants waiters in order while they fit. b.mu is held.
func (b *budget) notify() {
	for {
		el := b.waiters.Front()
		if el == nil {
			return
		}
		w := el.Value.(*budgetWaiter)
		if b.used+w.n > b.size {
			return
		}
		b.take(w.n)
		b.waiters.Remove(el)
		close(w.ready)
	}
}

// inUse returns the bytes held and the most ever held at once.
func (b *budget) inUse() (used, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}
