package resolver

import "github.com/bluesky-social/indigo/atproto/syntax"

// Waiters returns how many callers have joined the lookup of did in flight
// (not counting the one that started it), or -1 when none is in flight.
func (c *Cached) Waiters(did syntax.DID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[did]; ok {
		return f.waiters
	}
	return -1
}
