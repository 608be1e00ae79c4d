package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/cistern-dev/cistern/backlinks"
)

// The backlink queries, compatible with constellation's
// blue.microcosm.links.getBacklinks and getBacklinksCount (see
// docs/backlinks.md). They need the index (cistern.Config.Backlinks).

// backlinkRecordJSON is one linking record of getBacklinks.
type backlinkRecordJSON struct {
	DID        string `json:"did"`
	Collection string `json:"collection"`
	RKey       string `json:"rkey"`
}

// getBacklinksJSON is getBacklinks' answer. Cursor is null on the last
// page, as constellation answers.
type getBacklinksJSON struct {
	Total   int64                `json:"total"`
	Records []backlinkRecordJSON `json:"records"`
	Cursor  *string              `json:"cursor"`
}

// backlinkParams reads subject and source, refusing constellation's did
// filter, which is not supported.
func backlinkParams(p *params) (subject, source string) {
	subject = p.raw("subject", true)
	source = p.raw("source", true)
	if _, ok := p.q["did"]; ok {
		p.set(badRequest("did: filtering the linking records by DID is not supported"))
	}
	return subject, source
}

// getBacklinks answers blue.microcosm.links.getBacklinks: the records
// linking to subject from source, newest first.
func (s *Server) getBacklinks(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	subject, source := backlinkParams(p)
	limit := p.integer("limit", backlinks.DefaultLimit, 1, backlinks.MaxLimit)
	cursor := p.raw("cursor", false)
	if p.err != nil {
		return p.err
	}
	page, err := s.ix.Backlinks(r.Context(), subject, source, cursor, limit)
	if err != nil {
		return backlinkError(err)
	}
	out := getBacklinksJSON{Total: page.Total, Records: make([]backlinkRecordJSON, 0, len(page.Links))}
	for _, b := range page.Links {
		out.Records = append(out.Records, backlinkRecordJSON{DID: b.DID, Collection: b.Collection, RKey: b.RKey})
	}
	if page.Cursor != "" {
		out.Cursor = &page.Cursor
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getBacklinksCount answers blue.microcosm.links.getBacklinksCount:
// {"total": records}, with the number of distinct linking DIDs beside it
// as "distinctDids" (a cistern addition).
func (s *Server) getBacklinksCount(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	subject, source := backlinkParams(p)
	if p.err != nil {
		return p.err
	}
	n, err := s.ix.CountBacklinks(r.Context(), subject, source)
	if err != nil {
		return backlinkError(err)
	}
	writeJSON(w, http.StatusOK, struct {
		Total        int64 `json:"total"`
		DistinctDIDs int64 `json:"distinctDids"`
	}{n.Records, n.DIDs})
	return nil
}

// backlinkError turns the errors of the backlink queries into answers: bad
// input a 400 naming the parameter as the XRPC method calls it, an index
// that is off a 501, one being built a 503.
func backlinkError(err error) error {
	var ie *backlinks.InputError
	var be *backlinks.BuildingError
	switch {
	case errors.As(err, &ie):
		param := ie.Param
		if param == "target" {
			param = "subject"
		}
		return badRequest("%s %q: %v", param, ie.Value, ie.Err)
	case errors.Is(err, backlinks.ErrOff):
		return &apiError{http.StatusNotImplemented, "MethodNotImplemented",
			"the backlink index is off (start cistern with -backlinks, or set Config.Backlinks)"}
	case errors.As(err, &be):
		return &apiError{http.StatusServiceUnavailable, "IndexNotReady", fmt.Sprintf(
			"the backlink index is being built from the stored records (%d of about %d visited); try again later", be.Done, be.Total)}
	}
	return err
}
