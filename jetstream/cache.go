package jetstream

import "sync"

// frameCache shares the rendered (and compressed) messages of recent events
// between connections, so that an event going to many subscribers is
// rendered and compressed once, not once per subscriber. It holds at most
// maxEntries events and maxBytes of messages, evicting the oldest inserted
// first. Entries are immutable once stored. Safe for concurrent use.
type frameCache struct {
	mu         sync.Mutex
	entries    map[uint64]*frame
	queue      []uint64 // ids in insertion order
	bytes      int
	maxEntries int
	maxBytes   int
}

// frame is the messages of one event: its JSON, and the JSON compressed
// (nil until a compressed connection needed it).
type frame struct {
	json, zstd []byte
}

func (f *frame) size() int { return len(f.json) + len(f.zstd) }

func newFrameCache(maxEntries, maxBytes int) *frameCache {
	return &frameCache{entries: make(map[uint64]*frame, maxEntries), maxEntries: maxEntries, maxBytes: maxBytes}
}

func (c *frameCache) get(id uint64) *frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[id]
}

// put stores f for id, replacing an entry of the same id. A frame larger
// than a quarter of the cache is not stored.
func (c *frameCache) put(id uint64, f *frame) {
	size := f.size()
	if size > c.maxBytes/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[id]; ok {
		c.bytes += size - old.size()
		c.entries[id] = f
		return
	}
	for len(c.queue) > 0 && (len(c.entries) >= c.maxEntries || c.bytes+size > c.maxBytes) {
		old := c.queue[0]
		c.queue = c.queue[1:]
		if e, ok := c.entries[old]; ok {
			c.bytes -= e.size()
			delete(c.entries, old)
		}
	}
	c.queue = append(c.queue, id)
	c.entries[id] = f
	c.bytes += size
}
