package testnet

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
)

// hostFaults holds the faults a test armed on a Host.
type hostFaults struct {
	mu       sync.Mutex
	rules    []*failRule
	slowWait time.Duration
	slowSize int
	truncN   int
	truncAt  int
	// getBlocks faults
	noGetBlocks bool
	blockFaults map[cid.Cid]blockFault
}

type failRule struct {
	nsid       string // "" matches every XRPC method
	remaining  int
	status     int
	retryAfter time.Duration
}

// RateLimitNext makes the next n requests for the XRPC method nsid ("" for
// any method) answer 429 RateLimitExceeded with Retry-After (whole seconds,
// rounded up) and RateLimit-Reset (unix seconds) headers derived from
// retryAfter, plus RateLimit-Limit and RateLimit-Remaining: 0.
func (h *Host) RateLimitNext(nsid string, n int, retryAfter time.Duration) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	h.faults.rules = append(h.faults.rules, &failRule{nsid: nsid, remaining: n, status: http.StatusTooManyRequests, retryAfter: retryAfter})
}

// FailNext makes the next n requests for the XRPC method nsid ("" for any
// method) answer status (for example 500 or 503) with an XRPC error body.
func (h *Host) FailNext(nsid string, n int, status int) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	h.faults.rules = append(h.faults.rules, &failRule{nsid: nsid, remaining: n, status: status})
}

// SlowGetRepo makes every getRepo body from now on arrive in chunks of
// chunkSize bytes (default 16 KiB when <= 0) with a pause of perChunk
// before each chunk. A zero perChunk turns it off.
func (h *Host) SlowGetRepo(perChunk time.Duration, chunkSize int) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	if chunkSize <= 0 {
		chunkSize = 16 << 10
	}
	h.faults.slowWait, h.faults.slowSize = perChunk, chunkSize
}

// TruncateGetRepo makes the next n getRepo answers stop after afterBytes
// bytes of body and abort the connection, so that the client sees an
// unexpected EOF.
func (h *Host) TruncateGetRepo(n int, afterBytes int) {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	h.faults.truncN, h.faults.truncAt = n, afterBytes
}

// ClearFaults disarms every fault of the host.
func (h *Host) ClearFaults() {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	h.faults.rules = nil
	h.faults.slowWait, h.faults.slowSize = 0, 0
	h.faults.truncN, h.faults.truncAt = 0, 0
	h.faults.noGetBlocks, h.faults.blockFaults = false, nil
}

// intercept answers the request with an armed failure, if one matches, and
// reports whether it did.
func (f *hostFaults) intercept(w http.ResponseWriter, nsid string) bool {
	f.mu.Lock()
	var rule *failRule
	for i, r := range f.rules {
		if r.nsid == "" || r.nsid == nsid {
			r.remaining--
			rule = r
			if r.remaining <= 0 {
				f.rules = append(f.rules[:i:i], f.rules[i+1:]...)
			}
			break
		}
	}
	f.mu.Unlock()
	if rule == nil {
		return false
	}
	if rule.status == http.StatusTooManyRequests {
		secs := int64((rule.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		w.Header().Set("RateLimit-Limit", "100")
		w.Header().Set("RateLimit-Remaining", "0")
		w.Header().Set("RateLimit-Reset", strconv.FormatInt(time.Now().Add(rule.retryAfter).Unix()+boolInt(rule.retryAfter%time.Second != 0), 10))
		writeXRPCError(w, http.StatusTooManyRequests, "RateLimitExceeded", "Rate Limit Exceeded")
		return true
	}
	name := "InternalServerError"
	switch rule.status {
	case http.StatusBadGateway:
		name = "UpstreamFailure"
	case http.StatusServiceUnavailable:
		name = "NotEnoughResources"
	}
	writeXRPCError(w, rule.status, name, "injected failure")
	return true
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// bodyFaults returns the slow and truncation settings for one getRepo
// answer, consuming one truncation.
func (f *hostFaults) bodyFaults() (wait time.Duration, size int, truncAt int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	truncAt = -1
	if f.truncN > 0 {
		f.truncN--
		truncAt = f.truncAt
	}
	return f.slowWait, f.slowSize, truncAt
}

// faultWriter applies slow and truncated body faults to a response.
type faultWriter struct {
	w       http.ResponseWriter
	req     *http.Request
	wait    time.Duration
	size    int
	left    int // bytes before truncation; -1 for no truncation
	aborted bool
}

func (fw *faultWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p
		if fw.size > 0 && len(chunk) > fw.size {
			chunk = chunk[:fw.size]
		}
		if fw.left >= 0 && len(chunk) > fw.left {
			chunk = chunk[:fw.left]
		}
		if fw.wait > 0 {
			t := time.NewTimer(fw.wait)
			select {
			case <-t.C:
			case <-fw.req.Context().Done():
				t.Stop()
				return written, fw.req.Context().Err()
			}
		}
		n, err := fw.w.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		if fw.wait > 0 {
			if fl, ok := fw.w.(http.Flusher); ok {
				fl.Flush()
			}
		}
		p = p[len(chunk):]
		if fw.left >= 0 {
			fw.left -= len(chunk)
			if fw.left == 0 {
				fw.aborted = true
				if fl, ok := fw.w.(http.Flusher); ok {
					fl.Flush()
				}
				// Abort the connection mid-body: the client sees an
				// unexpected EOF instead of a complete answer.
				panic(http.ErrAbortHandler)
			}
		}
	}
	return written, nil
}
