package jetstream

import (
	"bytes"
	"testing"
)

func TestFrameCache_BoundedOldestOut(t *testing.T) {
	c := newFrameCache(4, 100)
	msg := func(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }
	for id := uint64(1); id <= 6; id++ {
		c.put(id, &frame{json: msg(10)})
	}
	for id := uint64(1); id <= 6; id++ {
		if got := c.get(id) != nil; got != (id >= 3) {
			t.Errorf("after 6 puts into 4 entries: id %d cached = %v", id, got)
		}
	}
	// Replacing an entry keeps its place and counts its new size.
	c.put(3, &frame{json: msg(10), zstd: msg(5)})
	if f := c.get(3); f == nil || len(f.zstd) != 5 || c.bytes != 45 {
		t.Errorf("replaced entry %v, bytes %d, want the new frame and 45 bytes", f, c.bytes)
	}
	// Bytes bound: a 25-byte frame needs room.
	c.put(7, &frame{json: msg(25)})
	if c.bytes > 100 || len(c.entries) > 4 {
		t.Errorf("cache holds %d bytes in %d entries, bounds 100 and 4", c.bytes, len(c.entries))
	}
	if c.get(7) == nil || c.get(3) != nil {
		t.Errorf("the newest frame should be in and the oldest out")
	}
	// Too large for the cache: not stored.
	c.put(8, &frame{json: msg(26)})
	if c.get(8) != nil {
		t.Error("a frame over a quarter of the cache was stored")
	}
}
