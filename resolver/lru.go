package resolver

import "container/list"

// lru is a bounded map that evicts the least recently used entry when full.
// It is not safe for concurrent use; Cached guards it with its mutex.
type lru[K comparable, V any] struct {
	capacity int
	order    *list.List // front is most recently used; values are *lruEntry
	items    map[K]*list.Element
	// onEvict, when set, is called with every entry that leaves the cache
	// through eviction or remove (not when put replaces a value).
	onEvict func(K, V)
}

type lruEntry[K comparable, V any] struct {
	key   K
	value V
}

func newLRU[K comparable, V any](capacity int) *lru[K, V] {
	return &lru[K, V]{capacity: capacity, order: list.New(), items: make(map[K]*list.Element)}
}

// get returns the value for key and marks it recently used.
func (c *lru[K, V]) get(key K) (V, bool) {
	el, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry[K, V]).value, true
}

// put stores value for key, evicting the least recently used entry if the
// cache is full.
func (c *lru[K, V]) put(key K, value V) {
	if el, ok := c.items[key]; ok {
		el.Value.(*lruEntry[K, V]).value = value
		c.order.MoveToFront(el)
		return
	}
	for c.order.Len() >= c.capacity && c.order.Len() > 0 {
		c.removeElement(c.order.Back())
	}
	c.items[key] = c.order.PushFront(&lruEntry[K, V]{key: key, value: value})
}

// remove deletes key; absent is not an error.
func (c *lru[K, V]) remove(key K) {
	if el, ok := c.items[key]; ok {
		c.removeElement(el)
	}
}

func (c *lru[K, V]) removeElement(el *list.Element) {
	e := el.Value.(*lruEntry[K, V])
	c.order.Remove(el)
	delete(c.items, e.key)
	if c.onEvict != nil {
		c.onEvict(e.key, e.value)
	}
}

func (c *lru[K, V]) len() int { return c.order.Len() }
