package backfill

import (
	"math/rand/v2"
	"time"
)

// backoff returns the wait before attempt number retries+1, where retries
// counts consecutive failures (1 after the first): min·2^(retries-1) capped at
// max. jitter in [-1, 1) scales it by up to ±20%.
func backoff(min, max time.Duration, retries int, jitter float64) time.Duration {
	if retries < 1 {
		retries = 1
	}
	d := min
	for i := 1; i < retries && d < max; i++ {
		d *= 2
	}
	if d > max || d <= 0 {
		d = max
	}
	return time.Duration(float64(d) * (1 + 0.2*jitter))
}

// randJitter returns a jitter in [-1, 1).
func randJitter() float64 { return rand.Float64()*2 - 1 }
