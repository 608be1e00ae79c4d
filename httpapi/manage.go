package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/tapcompat"
)

// MaxDIDsPerRequest bounds the "dids" list of one management request.
const MaxDIDsPerRequest = 10000

// ReposRequest is the body of POST /repos/add, /repos/remove and
// /repos/resync.
type ReposRequest struct {
	// DIDs are the repos to act on: 1 to MaxDIDsPerRequest valid DIDs.
	DIDs []string `json:"dids"`
	// DeleteData, for /repos/remove, also deletes the repos' records (each
	// with a delete event) and forgets their state.
	DeleteData bool `json:"deleteData,omitempty"`
}

// ReposResponse answers POST /repos/add, /repos/remove and /repos/resync.
type ReposResponse struct {
	// DIDs are the repos acted on, normalised.
	DIDs []string `json:"dids"`
}

// readDIDs decodes a ReposRequest and validates every DID before anything
// is done, so that a bad request changes nothing.
func readDIDs(r *http.Request) (*ReposRequest, *apiError) {
	var req ReposRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if len(req.DIDs) == 0 {
		return nil, badRequest(`"dids" must list at least one DID`)
	}
	if len(req.DIDs) > MaxDIDsPerRequest {
		return nil, badRequest(`"dids" lists %d DIDs; at most %d are allowed per request`, len(req.DIDs), MaxDIDsPerRequest)
	}
	for i, d := range req.DIDs {
		did, err := syntax.ParseDID(d)
		if err != nil {
			return nil, badRequest("dids[%d] is not a valid DID: %q", i, d)
		}
		req.DIDs[i] = did.String()
	}
	return &req, nil
}

func (s *Server) serveListRepos(w http.ResponseWriter, r *http.Request) {
	p := newParams(r)
	var opts cistern.ListReposOptions
	if v := p.raw("state", false); v != "" {
		st, err := store.ParseRepoState(v)
		if err != nil {
			p.set(badRequest("state must be one of %v: %q", store.RepoStates, v))
		}
		opts.State = st
	}
	if c := p.raw("cursor", false); c != "" {
		if _, err := syntax.ParseDID(c); err != nil {
			p.set(badRequest("cursor must be a DID from a previous page: %q", c))
		}
		opts.Cursor = c
	}
	opts.Limit = p.integer("limit", 100, 1, 1000)
	if p.err != nil {
		s.fail(w, r, p.err)
		return
	}
	page, err := s.ix.ListRepos(r.Context(), opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := struct {
		Cursor string     `json:"cursor,omitempty"`
		Repos  []repoJSON `json:"repos"`
	}{Cursor: page.Cursor, Repos: make([]repoJSON, 0, len(page.Repos))}
	for i := range page.Repos {
		out.Repos = append(out.Repos, toRepoJSON(&page.Repos[i]))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveGetRepo(w http.ResponseWriter, r *http.Request) {
	v := r.PathValue("did")
	did, err := syntax.ParseDID(v)
	if err != nil {
		s.fail(w, r, badRequest("path must name a valid DID: %q", v))
		return
	}
	info, err := s.repoInfo(r.Context(), did.String(), v)
	var ae *apiError
	if errors.As(err, &ae) && ae.name == "RepoNotFound" {
		writeError(w, http.StatusNotFound, "RepoNotFound", "repo "+did.String()+" is not tracked")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) serveAddRepos(w http.ResponseWriter, r *http.Request) {
	req, aerr := readDIDs(r)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	f := s.ix.Filter()
	for _, did := range req.DIDs {
		if f.Excluded(did) {
			s.fail(w, r, badRequest("%s is excluded by the filter; remove it from excludes first", did))
			return
		}
	}
	for _, did := range req.DIDs {
		if err := s.ix.Track(r.Context(), did); err != nil {
			s.fail(w, r, fmt.Errorf("track %s: %w", did, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, ReposResponse{DIDs: req.DIDs})
}

func (s *Server) serveRemoveRepos(w http.ResponseWriter, r *http.Request) {
	req, aerr := readDIDs(r)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	for _, did := range req.DIDs {
		if err := s.ix.Untrack(r.Context(), did, req.DeleteData); err != nil {
			s.fail(w, r, fmt.Errorf("untrack %s: %w", did, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, ReposResponse{DIDs: req.DIDs})
}

func (s *Server) serveResyncRepos(w http.ResponseWriter, r *http.Request) {
	req, aerr := readDIDs(r)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	for _, did := range req.DIDs {
		if _, err := s.ix.Repo(r.Context(), did); errors.Is(err, cistern.ErrNotTracked) {
			s.fail(w, r, &apiError{http.StatusBadRequest, "RepoNotFound", did + " is not tracked; add it first"})
			return
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	for _, did := range req.DIDs {
		if err := s.ix.Resync(r.Context(), did); err != nil {
			s.fail(w, r, fmt.Errorf("resync %s: %w", did, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, ReposResponse{DIDs: req.DIDs})
}

func (s *Server) serveGetFilter(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.ix.Filter().Spec())
}

// filterError maps an invalid spec or patch to a 400, and a change that
// would delete records without "confirmDelete" to a 409 DeleteNotConfirmed.
func filterError(err error) error {
	if errors.Is(err, filter.ErrDeleteNotConfirmed) {
		return &apiError{http.StatusConflict, "DeleteNotConfirmed", err.Error()}
	}
	if errors.Is(err, filter.ErrInvalidSpec) || errors.Is(err, filter.ErrInvalidPattern) || errors.Is(err, filter.ErrNoCollections) {
		return badRequest("%v", err)
	}
	return err
}

// FilterRequest is the body of PUT /filter: the whole new spec, and
// "confirmDelete" (true when the change may delete stored records: narrowed
// collections, new excludes; without it such a change is refused with 409
// DeleteNotConfirmed naming what would be deleted).
type FilterRequest struct {
	filter.Spec
	ConfirmDelete bool `json:"confirmDelete,omitempty"`
}

func (s *Server) servePutFilter(w http.ResponseWriter, r *http.Request) {
	var req FilterRequest
	if err := decodeBody(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	spec := req.Spec
	if err := spec.Validate(); err != nil {
		s.fail(w, r, badRequest("%v", err))
		return
	}
	if err := s.ix.ReplaceFilter(r.Context(), spec, req.ConfirmDelete); err != nil {
		s.fail(w, r, filterError(err))
		return
	}
	writeJSON(w, http.StatusOK, s.ix.Filter().Spec())
}

func (s *Server) servePatchFilter(w http.ResponseWriter, r *http.Request) {
	var p filter.Patch
	if err := decodeBody(r, &p); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := p.Validate(); err != nil {
		s.fail(w, r, badRequest("%v", err))
		return
	}
	spec, err := s.ix.PatchFilter(r.Context(), p)
	if err != nil {
		s.fail(w, r, filterError(err))
		return
	}
	writeJSON(w, http.StatusOK, spec)
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	st, err := s.ix.Stats(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Stats.Subscriptions counts /stream connections with the library's
	// subscriptions; /metrics has cistern_stream_subscribers for /stream
	// alone.
	if s.opts.Tap == nil {
		writeJSON(w, http.StatusOK, st)
		return
	}
	ts, err := s.opts.Tap.Stats(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		*cistern.Stats
		// Tap is the tap delivery's outbox.
		Tap *tapcompat.OutboxStats `json:"tap"`
	}{st, &ts})
}
