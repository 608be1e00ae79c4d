package testnet

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
)

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// writeXRPCError writes an XRPC error body {"error": name, "message": msg}.
func writeXRPCError(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": name, "message": msg})
}

// parseLimit parses an XRPC limit parameter, answering 400 InvalidRequest
// when it is not an integer in [lo, hi].
func parseLimit(w http.ResponseWriter, s string, def, lo, hi int) (int, bool) {
	if s == "" {
		return def, true
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest",
			"limit must be an integer between "+strconv.Itoa(lo)+" and "+strconv.Itoa(hi))
		return 0, false
	}
	return v, true
}

// counters counts requests per XRPC method.
type counters struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *counters) add(name string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]int64)
	}
	c.m[name]++
	c.mu.Unlock()
}

func (c *counters) get(name string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == "" {
		var n int64
		for _, v := range c.m {
			n += v
		}
		return n
	}
	return c.m[name]
}

func (c *counters) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func (c *counters) reset() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

func sortStrings(s []string) { slices.Sort(s) }
