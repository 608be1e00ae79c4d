package resolver

import "testing"

func TestLRU(t *testing.T) {
	var evicted []string
	c := newLRU[string, int](2)
	c.onEvict = func(k string, _ int) { evicted = append(evicted, k) }
	c.put("a", 1)
	c.put("b", 2)
	if v, ok := c.get("a"); !ok || v != 1 { // a is now most recent
		t.Fatalf("get(a) = %d, %v", v, ok)
	}
	c.put("c", 3) // evicts b
	if _, ok := c.get("b"); ok {
		t.Error("b survived eviction")
	}
	c.put("a", 10) // replace, no eviction
	if v, _ := c.get("a"); v != 10 {
		t.Errorf("get(a) = %d after replace", v)
	}
	c.remove("c")
	c.remove("missing")
	if c.len() != 1 {
		t.Errorf("len = %d, want 1", c.len())
	}
	if want := []string{"b", "c"}; len(evicted) != 2 || evicted[0] != want[0] || evicted[1] != want[1] {
		t.Errorf("evicted %q, want %q", evicted, want)
	}
}
