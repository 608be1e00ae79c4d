package backfill

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Get sends a GET to u, a PDS host, under the same per-host limits as the
// scheduler's own getRepo requests: at most PerHost requests to a host at
// once, their starts spaced by HostInterval, and none while the host is
// paused after a 429. A 429 pauses the host (until Retry-After or
// RateLimit-Reset, within MinBackoff and MaxBackoff) for backfills too, and
// a request to a paused host is not sent: both return an error wrapping
// ErrRateLimited. Otherwise Get returns the status and up to limit bytes of
// the body, whatever the status: the caller judges it. The discovery crawl
// asks PDS hosts through it (describeRepo), so that it and the backfills
// share each host's limits. Get is safe for concurrent use.
func (s *Scheduler) Get(ctx context.Context, u string, limit int64) (status int, body []byte, err error) {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
		return 0, nil, fmt.Errorf("backfill: invalid host URL %q", u)
	}
	release, err := s.hosts.acquire(ctx, pu.Host)
	if err != nil {
		return 0, nil, err
	}
	defer release()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		until := s.retryAt(resp.Header)
		s.hosts.pause(pu.Host, until)
		return resp.StatusCode, nil, fmt.Errorf("%w: %s answered 429 until %s", ErrRateLimited, pu.Host, until.UTC().Format(time.RFC3339))
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err == nil && resp.StatusCode < 500 {
		s.hostAnswered(ctx, pu.Host)
	}
	return resp.StatusCode, body, err
}
