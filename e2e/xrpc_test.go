package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// xrpc reads com.atproto.repo.* and com.atproto.sync.* from a host: the
// PDS, or cistern's HTTP side, which must answer the same way.
type xrpc struct {
	base string
	hc   *http.Client
}

func newXRPC(base string) *xrpc {
	return &xrpc{base: base, hc: &http.Client{Timeout: 30 * time.Second}}
}

// xrpcError is an XRPC error answer.
type xrpcError struct {
	Status  int
	Name    string `json:"error"`
	Message string `json:"message"`
}

func (e *xrpcError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Name, e.Message)
}

// isXRPCError reports whether err is an XRPC error answer named name.
func isXRPCError(err error, name string) bool {
	var xe *xrpcError
	return errors.As(err, &xe) && xe.Name == name
}

func (c *xrpc) get(ctx context.Context, method string, q url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/xrpc/"+method+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		xe := &xrpcError{Status: resp.StatusCode}
		if json.Unmarshal(data, xe) != nil || xe.Name == "" {
			xe.Message = string(data)
		}
		return fmt.Errorf("%s %s: %w", method, q.Encode(), xe)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decode %q: %w", method, data, err)
	}
	return nil
}

// answer is a host's answer to one query: the status and, when it is not
// 200, the XRPC error's name and message; when it is, the body.
type answer struct {
	Status  int
	Name    string
	Message string
	Body    json.RawMessage
}

func (a answer) String() string {
	if a.Status == http.StatusOK {
		return fmt.Sprintf("200 %s", a.Body)
	}
	return fmt.Sprintf("%d %s %q", a.Status, a.Name, a.Message)
}

// ask calls method and returns the host's answer, error or not; err is
// for a request that got no answer.
func (c *xrpc) ask(ctx context.Context, method string, q url.Values) (answer, error) {
	var body json.RawMessage
	err := c.get(ctx, method, q, &body)
	var xe *xrpcError
	switch {
	case err == nil:
		return answer{Status: http.StatusOK, Body: body}, nil
	case errors.As(err, &xe):
		return answer{Status: xe.Status, Name: xe.Name, Message: xe.Message}, nil
	}
	return answer{}, err
}

// xrecord is a record as com.atproto.repo.getRecord and listRecords give it.
type xrecord struct {
	URI   string          `json:"uri"`
	CID   string          `json:"cid"`
	Value json.RawMessage `json:"value"`
}

// listRecords lists every record of a collection, following cursors.
func (c *xrpc) listRecords(ctx context.Context, did, collection string) ([]xrecord, error) {
	var all []xrecord
	cursor := ""
	for range 10_000 {
		q := url.Values{"repo": {did}, "collection": {collection}, "limit": {"100"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Cursor  string    `json:"cursor"`
			Records []xrecord `json:"records"`
		}
		if err := c.get(ctx, "com.atproto.repo.listRecords", q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Records...)
		if page.Cursor == "" || len(page.Records) == 0 {
			return all, nil
		}
		if page.Cursor == cursor {
			return nil, fmt.Errorf("listRecords %s %s: cursor %q repeats", did, collection, cursor)
		}
		cursor = page.Cursor
	}
	return nil, fmt.Errorf("listRecords %s %s: too many pages", did, collection)
}

// getRecord returns one record; a missing one is an error for which
// isXRPCError(err, "RecordNotFound") holds.
func (c *xrpc) getRecord(ctx context.Context, did, collection, rkey string) (*xrecord, error) {
	var out xrecord
	q := url.Values{"repo": {did}, "collection": {collection}, "rkey": {rkey}}
	if err := c.get(ctx, "com.atproto.repo.getRecord", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// repoDescription is what describeRepo answers.
type repoDescription struct {
	Handle          string   `json:"handle"`
	DID             string   `json:"did"`
	Collections     []string `json:"collections"`
	HandleIsCorrect bool     `json:"handleIsCorrect"`
}

func (c *xrpc) describeRepo(ctx context.Context, did string) (*repoDescription, error) {
	var out repoDescription
	if err := c.get(ctx, "com.atproto.repo.describeRepo", url.Values{"repo": {did}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// repoStatus is what com.atproto.sync.getRepoStatus answers.
type repoStatus struct {
	DID    string `json:"did"`
	Active bool   `json:"active"`
	Status string `json:"status"`
	Rev    string `json:"rev"`
}

// getRepoStatus returns the host's account status; for an unknown or
// deleted repo the error satisfies isXRPCError(err, "RepoNotFound").
func (c *xrpc) getRepoStatus(ctx context.Context, did string) (*repoStatus, error) {
	var out repoStatus
	if err := c.get(ctx, "com.atproto.sync.getRepoStatus", url.Values{"did": {did}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// plcHandle returns the handle a DID document claims (its first at://
// alsoKnownAs), from the PLC directory.
func plcHandle(ctx context.Context, plc, did string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, plc+"/"+did, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("PLC %s: HTTP %d", did, resp.StatusCode)
	}
	var doc struct {
		AlsoKnownAs []string `json:"alsoKnownAs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return "", fmt.Errorf("PLC %s: %w", did, err)
	}
	for _, aka := range doc.AlsoKnownAs {
		if h, ok := strings.CutPrefix(aka, "at://"); ok {
			return h, nil
		}
	}
	return "", fmt.Errorf("PLC %s: no handle in alsoKnownAs %v", did, doc.AlsoKnownAs)
}
