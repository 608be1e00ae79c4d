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
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	gocar "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
)

// memoryPerBlocksByte is how many bytes of budget one byte of a getBlocks
// answer is charged while it is decoded: the body, plus what is decoded
// from it.
const memoryPerBlocksByte = 2

// maxJSONAnswer bounds the JSON answers of getLatestCommit and describeRepo.
const maxJSONAnswer = 1 << 20

// blockClient makes the requests of one sparse backfill: one repo, on one
// host, each request within the host's limits, FetchTimeout and the byte
// budget, and all of them together within MaxRepoSize bytes.
type blockClient struct {
	s       *Scheduler
	pds     string // base URL, without a trailing slash
	host    string
	did     string
	fetched int64 // body bytes received so far
}

func (s *Scheduler) newBlockClient(pds, did string) (*blockClient, error) {
	u, err := url.Parse(pds)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fail(KindResolve, "invalid PDS endpoint %q", pds)
	}
	return &blockClient{s: s, pds: strings.TrimSuffix(pds, "/"), host: u.Host, did: did}, nil
}

// get makes one GET request for the XRPC method with the query q and
// returns its body, charged to the byte budget until release is called
// (release is never nil when err is nil). A body of known length is charged
// before it is read; one of unknown length is read (at most what is left of
// MaxRepoSize) and then charged, after the host's request slot is freed.
// Answers other than 200 become outcomes or failures as for getRepo, except
// that a getBlocks or getLatestCommit answer saying the method is not
// implemented wraps errNoGetBlocks, and a getBlocks answer saying a block is
// missing is a failure of kind "block" wrapping ErrBlockMissing.
func (c *blockClient) get(ctx context.Context, method string, q url.Values, limit int64) (body []byte, release func(), err error) {
	s := c.s
	releaseHost, err := s.hosts.acquire(ctx, c.host)
	if err != nil {
		return nil, nil, err
	}
	freeHost := sync.OnceFunc(releaseHost)
	defer freeHost()

	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(s.opts.FetchTimeout, func() { cancel(errFetchTimeout) })
	defer timer.Stop()
	req, err := http.NewRequestWithContext(fctx, http.MethodGet, c.pds+"/xrpc/"+method+"?"+q.Encode(), nil)
	if err != nil {
		return nil, nil, fail(KindResolve, "%s request: %w", method, err)
	}
	s.requests.Add(1)
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, nil, s.transportFailure(ctx, fctx, method, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		xe := readXRPCError(resp)
		if method == methodGetBlocks || method == methodGetLatestCommit {
			switch {
			case resp.StatusCode == http.StatusNotImplemented, xe.Error == "MethodNotImplemented",
				resp.StatusCode == http.StatusNotFound && xe.Error == "":
				return nil, nil, fmt.Errorf("%w (%s answered %s to %s)", errNoGetBlocks, c.host, resp.Status, method)
			case method == methodGetBlocks && xe.Error == "BlockNotFound",
				resp.StatusCode == http.StatusBadRequest && strings.Contains(xe.Message, "Could not find cids"):
				return nil, nil, fail(KindBlock, "%w: %s answered %s: %s", ErrBlockMissing, c.host, resp.Status, xe.Message)
			}
		}
		return nil, nil, s.answerFailure(resp, xe, c.host, c.did, method)
	}

	left := s.opts.MaxRepoSize - c.fetched
	if limit > left {
		limit = left
	}
	tooLarge := func() error {
		return fail(KindTooLarge, "%s: the answers of this sparse backfill exceed the limit of %d bytes", method, s.opts.MaxRepoSize)
	}
	if resp.ContentLength > limit {
		return nil, nil, tooLarge()
	}
	charge := int64(0)
	if resp.ContentLength >= 0 {
		charge = s.budget.clamp(memoryPerBlocksByte * resp.ContentLength)
		if !timer.Stop() {
			return nil, nil, fail(KindTimeout, "%s: no complete answer within %s", method, s.opts.FetchTimeout)
		}
		if err := s.budget.acquire(ctx, charge); err != nil {
			return nil, nil, err
		}
		timer.Reset(s.opts.FetchTimeout)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	s.bytes.Add(int64(len(body)))
	s.ledger.received(c.host, int64(len(body)))
	c.fetched += int64(len(body))
	if err == nil && resp.ContentLength >= 0 && int64(len(body)) < resp.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		s.budget.release(charge)
		return nil, nil, s.transportFailure(ctx, fctx, "reading "+method, err)
	}
	if int64(len(body)) > limit {
		s.budget.release(charge)
		return nil, nil, tooLarge()
	}
	if resp.ContentLength < 0 {
		freeHost() // the request is done; free the host while waiting for budget
		charge = s.budget.clamp(memoryPerBlocksByte * int64(len(body)))
		if err := s.budget.acquire(ctx, charge); err != nil {
			return nil, nil, err
		}
	}
	return body, sync.OnceFunc(func() { s.budget.release(charge) }), nil
}

// getJSON makes a request whose answer is JSON and decodes it into out.
func (c *blockClient) getJSON(ctx context.Context, method string, q url.Values, out any) error {
	body, release, err := c.get(ctx, method, q, maxJSONAnswer)
	if err != nil {
		return err
	}
	defer release()
	if err := json.Unmarshal(body, out); err != nil {
		return fail(KindMalformed, "%s: invalid JSON answer: %w", method, err)
	}
	return nil
}

const (
	methodGetBlocks       = "com.atproto.sync.getBlocks"
	methodGetLatestCommit = "com.atproto.sync.getLatestCommit"
	methodDescribeRepo    = "com.atproto.repo.describeRepo"
)

// latestCommit asks the host for the CID of the repo's current commit.
func (c *blockClient) latestCommit(ctx context.Context) (cid.Cid, error) {
	var out struct {
		CID string `json:"cid"`
		Rev string `json:"rev"`
	}
	if err := c.getJSON(ctx, methodGetLatestCommit, url.Values{"did": {c.did}}, &out); err != nil {
		return cid.Undef, err
	}
	cc, err := cid.Decode(out.CID)
	if err != nil {
		return cid.Undef, fail(KindMalformed, "getLatestCommit: invalid cid %q: %w", out.CID, err)
	}
	return cc, nil
}

// collections asks the host which collections the repo holds
// (describeRepo). The answer is a hint, not verified data.
func (c *blockClient) collections(ctx context.Context) ([]string, error) {
	var out struct {
		Collections []string `json:"collections"`
	}
	if err := c.getJSON(ctx, methodDescribeRepo, url.Values{"repo": {c.did}}, &out); err != nil {
		return nil, err
	}
	return out.Collections, nil
}

// blocks fetches the blocks named by cids with getBlocks, BlocksPerRequest
// at a time, checks that each answer holds every block asked for and that
// each block hashes to its CID, and hands each block to fn once, in the
// order of the answer. The data passed to fn must not be modified; it stays
// valid after fn returns. A block missing from an answer is a failure of
// kind "block" wrapping ErrBlockMissing; one that does not hash to its CID
// wraps ErrBlockMismatch.
func (c *blockClient) blocks(ctx context.Context, cids []cid.Cid, fn func(c cid.Cid, data []byte) error) error {
	per := c.s.opts.BlocksPerRequest
	for len(cids) > 0 {
		n := min(per, len(cids))
		if err := c.batch(ctx, cids[:n], fn); err != nil {
			return err
		}
		cids = cids[n:]
	}
	return nil
}

func (c *blockClient) batch(ctx context.Context, cids []cid.Cid, fn func(c cid.Cid, data []byte) error) error {
	q := url.Values{"did": {c.did}}
	wanted := make(map[cid.Cid]bool, len(cids))
	for _, cc := range cids {
		if !wanted[cc] {
			wanted[cc] = true
			q.Add("cids", cc.String())
		}
	}
	body, release, err := c.get(ctx, methodGetBlocks, q, c.s.opts.MaxRepoSize)
	if err != nil {
		return err
	}
	defer release()
	br := bufio.NewReader(bytes.NewReader(body))
	h, err := gocar.ReadHeader(br)
	if err != nil {
		return fail(KindMalformed, "getBlocks: reading CAR header: %w", err)
	}
	if h.Version != 1 {
		return fail(KindMalformed, "getBlocks: unsupported CAR version %d", h.Version)
	}
	got := 0
	for {
		bc, data, err := carutil.ReadNode(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(KindMalformed, "getBlocks: reading CAR block: %w", err)
		}
		left, asked := wanted[bc]
		if !asked || !left {
			continue // not asked for, or a duplicate: ignored
		}
		sum, err := bc.Prefix().Sum(data)
		if err != nil {
			return fail(KindMalformed, "getBlocks: block %s: %w", bc, err)
		}
		if !sum.Equals(bc) {
			return fail(KindBlock, "%w: getBlocks from %s sent block %s whose bytes hash to %s", ErrBlockMismatch, c.host, bc, sum)
		}
		wanted[bc] = false
		got++
		if err := fn(bc, data); err != nil {
			return err
		}
	}
	if got < len(wanted) {
		var missing []string
		for cc, left := range wanted {
			if left {
				missing = append(missing, cc.String())
			}
		}
		return fail(KindBlock, "%w: getBlocks from %s lacks %d of %d blocks asked for (%s)",
			ErrBlockMissing, c.host, len(missing), len(wanted), strings.Join(missing[:min(len(missing), 3)], ", "))
	}
	return nil
}
