package jetstream

import "sync"

// frameCache shares the rendered (and compressed) messages of recent events
// between connections, so that an event going to many subscribers is
// rendered and compressed once, not once per subscriber: the first
// connection to need a message makes it while the others wait for it. It
// holds at most maxEntries events and maxBytes of messages, evicting the
// oldest inserted first. Safe for concurrent use.
type frameCache struct {
	mu         sync.Mutex
	entries    map[uint64]*cacheEntry
	queue      []uint64 // ids in insertion order
	bytes      int
	maxEntries int
	maxBytes   int
}

type cacheEntry struct {
	f    *frame
	size int // bytes of f counted so far (see grew)
}

// frame is the messages of one event, each made once: its JSON (ok false
// when the event could not be rendered) and the JSON compressed.
type frame struct {
	jsonOnce sync.Once
	json     []byte
	ok       bool
	zstdOnce sync.Once
	zstd     []byte
}

func newFrameCache(maxEntries, maxBytes int) *frameCache {
	return &frameCache{entries: make(map[uint64]*cacheEntry, maxEntries), maxEntries: maxEntries, maxBytes: maxBytes}
}

// frame returns the frame of event id, adding an empty one (and evicting
// the oldest) when it is not cached. A frame stays usable after eviction.
func (c *frameCache) frame(id uint64) *frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[id]; ok {
		return e.f
	}
	c.evict(1)
	e := &cacheEntry{f: &frame{}}
	c.queue = append(c.queue, id)
	c.entries[id] = e
	return e.f
}

// grew counts n more bytes made for the frame of id, if it is still
// cached, evicting older frames to stay within maxBytes.
func (c *frameCache) grew(id uint64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok {
		return
	}
	e.size += n
	c.bytes += n
	c.evict(0)
}

// evict removes the oldest entries until room more entries fit and the
// bytes are within bounds.
func (c *frameCache) evict(room int) {
	for len(c.queue) > 0 && (len(c.entries)+room > c.maxEntries || c.bytes > c.maxBytes) {
		old := c.queue[0]
		c.queue = c.queue[1:]
		if e, ok := c.entries[old]; ok {
			c.bytes -= e.size
			delete(c.entries, old)
		}
	}
}
