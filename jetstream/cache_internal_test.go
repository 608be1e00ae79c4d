package jetstream

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestFrameCache_BoundedOldestOut(t *testing.T) {
	c := newFrameCache(4, 100)
	for id := uint64(1); id <= 6; id++ {
		c.frame(id)
		c.grew(id, 10)
	}
	for id := uint64(1); id <= 6; id++ {
		c.mu.Lock()
		_, got := c.entries[id]
		c.mu.Unlock()
		if got != (id >= 3) {
			t.Errorf("after 6 frames in 4 entries: id %d cached = %v", id, got)
		}
	}
	if c.bytes != 40 {
		t.Errorf("bytes = %d, want 40", c.bytes)
	}
	// The bytes bound: 70 more bytes for id 6 push the oldest out.
	c.grew(6, 70)
	if c.bytes > 100 || c.entries[3] != nil || c.entries[6] == nil {
		t.Errorf("after growing: %d bytes, entries %v", c.bytes, c.entries)
	}
	// A frame evicted while being made stays usable; its bytes are not counted.
	f := c.frame(9)
	for id := uint64(10); id < 20; id++ {
		c.frame(id)
	}
	c.grew(9, 1000)
	if c.bytes > 100 || f == nil {
		t.Errorf("bytes %d after growing an evicted frame", c.bytes)
	}
}

func TestFrameCache_MadeOnce(t *testing.T) {
	c := newFrameCache(16, 1<<20)
	var made atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := c.frame(7)
			f.jsonOnce.Do(func() { made.Add(1); f.json, f.ok = []byte("{}"), true })
			if string(f.json) != "{}" {
				t.Error("a waiter saw no message")
			}
		}()
	}
	wg.Wait()
	if made.Load() != 1 {
		t.Errorf("message made %d times by 50 connections, want once", made.Load())
	}
}
