package firehose

import (
	"context"
	"time"
)

// backoff returns how long to wait before reconnect attempt n (0 for the
// first attempt after a connection ended). With d = min(minD·2ⁿ, maxD) it
// returns a duration in [d/2, d]: exponential growth, capped, with random
// jitter so that many clients dropped at once do not reconnect in step.
// rnd(k) must return a value in [0, k).
func backoff(n int, minD, maxD time.Duration, rnd func(int64) int64) time.Duration {
	d := minD
	for i := 0; i < n && d < maxD; i++ {
		d *= 2
	}
	if d > maxD || d <= 0 { // d <= 0: overflow
		d = maxD
	}
	half := d / 2
	return d - half + time.Duration(rnd(int64(half)+1))
}

// sleep waits for d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
