package backfill

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

var errFetchTimeout = errors.New("fetch timeout")

// MemoryPerCARByte is how many bytes of memory one byte of CAR costs while
// its repo is backfilled: the CAR buffer (1×) plus the blocks and MST that
// indigo's repo.LoadRepoFromCAR builds from it (measured at about 3.5× for
// repos of small records). The byte budget is charged this multiple.
const MemoryPerCARByte = 4.5

// memoryCost is the budget charge of a CAR of size bytes.
func memoryCost(size int64) int64 { return int64(float64(size) * MemoryPerCARByte) }

// car is a fetched CAR, admitted under the byte budget. close releases the
// budget and removes any spool file.
type car struct {
	r     io.Reader
	size  int64
	close func()
}

// xrpcError is the body of an XRPC error response.
type xrpcError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// fetch downloads the repo's CAR from pds, within the host limits, the size
// limit, the fetch timeout and the byte budget. Failures are *failure (with
// kind) or an outcome error (ErrRepoNotFound, *InactiveError).
func (s *Scheduler) fetch(ctx context.Context, pds, did string) (*car, error) {
	u, err := url.Parse(pds)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fail(KindResolve, "invalid PDS endpoint %q", pds)
	}
	hostName := u.Host
	releaseHost, err := s.hosts.acquire(ctx, hostName)
	if err != nil {
		return nil, err
	}
	release := sync.OnceFunc(releaseHost)
	defer release()

	// FetchTimeout bounds the request and the body, not the wait for budget.
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(s.opts.FetchTimeout, func() { cancel(errFetchTimeout) })
	defer timer.Stop()
	started := time.Now()
	endpoint := strings.TrimSuffix(pds, "/") + "/xrpc/com.atproto.sync.getRepo?did=" + url.QueryEscape(did)
	req, err := http.NewRequestWithContext(fctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, fail(KindResolve, "getRepo request: %w", err)
	}
	req.Header.Set("Accept", "application/vnd.ipld.car")
	s.requests.Add(1)
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, s.transportFailure(ctx, fctx, "getRepo", err)
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		return nil, s.answerFailure(resp, readXRPCError(resp), hostName, did, "getRepo")
	}

	if resp.ContentLength > s.opts.MaxRepoSize {
		return nil, fail(KindTooLarge, "getRepo: %d bytes exceeds the limit of %d", resp.ContentLength, s.opts.MaxRepoSize)
	}
	if resp.ContentLength >= 0 {
		// Known length: take the budget first, then read into memory.
		n := s.budget.clamp(memoryCost(resp.ContentLength))
		if !timer.Stop() {
			return nil, fail(KindTimeout, "getRepo: no complete answer within %s", s.opts.FetchTimeout)
		}
		waitStart := time.Now()
		if err := s.budget.acquire(ctx, n); err != nil {
			return nil, err
		}
		timer.Reset(s.opts.FetchTimeout - waitStart.Sub(started))
		buf := make([]byte, resp.ContentLength)
		got, err := io.ReadFull(resp.Body, buf)
		s.bytes.Add(int64(got))
		s.ledger.received(hostName, int64(got))
		if err != nil {
			s.budget.release(n)
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return nil, fail(KindTruncated, "getRepo: body ended after %d of %d bytes", got, resp.ContentLength)
			}
			return nil, s.transportFailure(ctx, fctx, "reading getRepo", err)
		}
		return &car{r: bytes.NewReader(buf), size: int64(got), close: func() { s.budget.release(n) }}, nil
	}

	// Unknown length: spool to disk while counting, then admit.
	f, err := os.CreateTemp(s.opts.TempDir, "cistern-car-*")
	if err != nil {
		return nil, fail(KindNetwork, "spooling getRepo: %w", err)
	}
	cleanup := func() {
		f.Close()
		os.Remove(f.Name())
	}
	got, err := io.Copy(f, io.LimitReader(resp.Body, s.opts.MaxRepoSize+1))
	s.bytes.Add(got)
	s.ledger.received(hostName, got)
	if err != nil {
		cleanup()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fail(KindTruncated, "getRepo: body ended after %d bytes", got)
		}
		return nil, s.transportFailure(ctx, fctx, "reading getRepo", err)
	}
	if got > s.opts.MaxRepoSize {
		cleanup()
		return nil, fail(KindTooLarge, "getRepo: body exceeds the limit of %d bytes", s.opts.MaxRepoSize)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return nil, fail(KindNetwork, "spooling getRepo: %w", err)
	}
	release() // the request is done; free the host while waiting for budget
	n := s.budget.clamp(memoryCost(got))
	if err := s.budget.acquire(ctx, n); err != nil {
		cleanup()
		return nil, err
	}
	return &car{r: bufio.NewReaderSize(f, 64<<10), size: got, close: func() {
		cleanup()
		s.budget.release(n)
	}}, nil
}

// readXRPCError reads the XRPC error body of a failed answer, if it has one.
func readXRPCError(resp *http.Response) xrpcError {
	var xe xrpcError
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&xe)
	return xe
}

// answerFailure turns an answer other than 200 to method into an outcome
// (ErrRepoNotFound, *InactiveError) or a failure: a 429 pauses the host and
// is a rate-limit failure, anything else an HTTP failure naming the status
// and the XRPC error.
func (s *Scheduler) answerFailure(resp *http.Response, xe xrpcError, hostName, did, method string) error {
	if resp.StatusCode == http.StatusTooManyRequests {
		until := s.retryAt(resp.Header)
		s.hosts.pause(hostName, until)
		return &failure{kind: KindRateLimited, until: until,
			err: fmt.Errorf("%w: %s answered 429 to %s until %s", ErrRateLimited, hostName, method, until.UTC().Format(time.RFC3339))}
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		switch xe.Error {
		case "RepoNotFound":
			return ErrRepoNotFound
		case "RepoDeactivated":
			return &InactiveError{DID: did, Status: "deactivated"}
		case "RepoTakendown":
			return &InactiveError{DID: did, Status: "takendown"}
		case "RepoSuspended":
			return &InactiveError{DID: did, Status: "suspended"}
		}
	}
	msg := resp.Status
	if xe.Error != "" {
		msg += ": " + xe.Error
		if xe.Message != "" {
			msg += ": " + xe.Message
		}
	}
	return fail(KindHTTP, "%s: %s", method, msg)
}

// transportFailure classifies an error of the request or body read.
func (s *Scheduler) transportFailure(ctx, fctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(context.Cause(fctx), errFetchTimeout) {
		return fail(KindTimeout, "%s: no complete answer within %s: %w", what, s.opts.FetchTimeout, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fail(KindTruncated, "%s: %w", what, err)
	}
	return fail(KindNetwork, "%s: %w", what, err)
}

// retryAt reads when a 429'd host accepts requests again: Retry-After
// (delta seconds or an HTTP date), else RateLimit-Reset (unix seconds; a
// value below 10^9 is taken as delta seconds), else MinBackoff from now.
// The result is at most MaxBackoff from now.
func (s *Scheduler) retryAt(h http.Header) time.Time {
	now := s.opts.Now()
	until := time.Time{}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
			until = now.Add(time.Duration(secs) * time.Second)
		} else if t, err := http.ParseTime(v); err == nil {
			until = t
		}
	}
	if until.IsZero() {
		if v := strings.TrimSpace(h.Get("RateLimit-Reset")); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				if n < 1e9 {
					until = now.Add(time.Duration(n) * time.Second)
				} else {
					until = time.Unix(n, 0)
				}
			}
		}
	}
	if until.IsZero() {
		until = now.Add(s.opts.MinBackoff)
	}
	if max := now.Add(s.opts.MaxBackoff); until.After(max) {
		until = max
	}
	if until.Before(now) {
		until = now
	}
	return until
}
