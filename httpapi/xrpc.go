package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/store"
)

// xrpcMethods are the XRPC queries served, by NSID.
func (s *Server) xrpcMethods() map[string]func(w http.ResponseWriter, r *http.Request) error {
	return map[string]func(w http.ResponseWriter, r *http.Request) error{
		"com.atproto.repo.getRecord":             s.getRecord,
		"com.atproto.repo.listRecords":           s.listRecords,
		"com.atproto.repo.describeRepo":          s.describeRepo,
		"com.atproto.sync.getRepoStatus":         s.getRepoStatus,
		"com.atproto.sync.listRepos":             s.syncListRepos,
		"com.atproto.sync.getLatestCommit":       s.getLatestCommit,
		"dev.cistern.countRecords":               s.countRecords,
		"dev.cistern.listCollection":             s.listCollection,
		"dev.cistern.getRepoInfo":                s.getRepoInfo,
		"blue.microcosm.links.getBacklinks":      s.getBacklinks,
		"blue.microcosm.links.getBacklinksCount": s.getBacklinksCount,
	}
}

func (s *Server) serveXRPC(w http.ResponseWriter, r *http.Request) {
	nsid := r.PathValue("nsid")
	h, ok := s.xrpc[nsid]
	if !ok {
		writeError(w, http.StatusNotImplemented, "MethodNotImplemented", "Method Not Implemented: "+nsid)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "InvalidRequest", nsid+" is a query: use GET")
		return
	}
	if err := h(w, r); err != nil {
		s.fail(w, r, err)
	}
}

// recordJSON is a record as getRecord and listRecords answer it.
type recordJSON struct {
	URI   string          `json:"uri"`
	CID   string          `json:"cid"`
	Value json.RawMessage `json:"value"`
}

func toRecordJSON(rec *cistern.Record) (recordJSON, error) {
	v, err := cistern.ValueJSON(rec.Value)
	if err != nil {
		return recordJSON{}, err
	}
	return recordJSON{URI: rec.URI(), CID: rec.CID.String(), Value: v}, nil
}

func repoNotFound(v string) *apiError {
	return &apiError{http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: " + v}
}

// lookupRepo turns a repo parameter (DID or handle) into the DID of a repo
// the indexer knows, whatever its account's state. A repo is known when it
// is tracked or still has records stored. did is "" for a repo the indexer
// does not know; repo is nil for one that is not tracked.
func (s *Server) lookupRepo(ctx context.Context, id syntax.AtIdentifier) (did string, repo *cistern.Repo, err error) {
	if d, err := id.AsDID(); err == nil {
		did = d.String()
	} else {
		h, _ := id.AsHandle()
		did, err = s.ix.LookupHandle(ctx, h.String())
		if errors.Is(err, cistern.ErrNotTracked) {
			return "", nil, nil
		}
		if err != nil {
			return "", nil, err
		}
	}
	repo, err = s.ix.Repo(ctx, did)
	switch {
	case errors.Is(err, cistern.ErrNotTracked):
		n, err := s.ix.CountRecords(ctx, did, "")
		if err != nil {
			return "", nil, err
		}
		if n == 0 {
			return "", nil, nil
		}
		return did, nil, nil
	case err != nil:
		return "", nil, err
	}
	return did, repo, nil
}

// resolveRepo turns a repo parameter (DID or handle) into the DID of a repo
// the indexer knows, and checks, as the reference PDS's describeRepo and
// sync methods do, that its account is active: an unknown or deleted repo
// is RepoNotFound, an inactive account RepoDeactivated, RepoTakendown or
// RepoSuspended.
func (s *Server) resolveRepo(ctx context.Context, id syntax.AtIdentifier, given string) (string, error) {
	did, repo, err := s.lookupRepo(ctx, id)
	switch {
	case err != nil:
		return "", err
	case did == "":
		return "", repoNotFound(given)
	case repo == nil:
		return did, nil
	}
	return did, inactiveError(&repo.Repo, given)
}

// activeRepo turns a repo parameter (DID or handle) into the DID of a repo
// whose account is active, the way the reference PDS's getRecord and
// listRecords look a repo up: it returns "" for a repo the indexer does not
// know and for an account that is deactivated, taken down, suspended or
// deleted, and the caller answers with its own not-found error.
func (s *Server) activeRepo(ctx context.Context, id syntax.AtIdentifier) (string, error) {
	did, repo, err := s.lookupRepo(ctx, id)
	if err != nil {
		return "", err
	}
	if repo != nil && !repo.State.Active() {
		return "", nil
	}
	return did, nil
}

// inactiveError returns the reference PDS's error for an inactive account,
// or nil.
func inactiveError(r *store.Repo, given string) error {
	switch r.State {
	case store.StateDeleted:
		return repoNotFound(given)
	case store.StateDeactivated:
		return &apiError{http.StatusBadRequest, "RepoDeactivated", "Repo has been deactivated: " + given}
	case store.StateTakendown:
		return &apiError{http.StatusBadRequest, "RepoTakendown", "Repo has been takendown: " + given}
	case store.StateSuspended:
		return &apiError{http.StatusBadRequest, "RepoSuspended", "Repo has been suspended: " + given}
	}
	return nil
}

// getRecord answers com.atproto.repo.getRecord. As the reference PDS
// without an app view to forward to, a repo that is unknown, or whose
// account is not active, is 400 InvalidRequest "Could not locate record";
// an absent record of a known repo is 400 RecordNotFound.
func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	id := p.identifier("repo")
	coll := p.nsid("collection", true)
	rkey := p.rkey("rkey", true)
	want, haveWant := p.cid("cid")
	if p.err != nil {
		return p.err
	}
	did, err := s.activeRepo(r.Context(), id)
	if err != nil {
		return err
	}
	if did == "" {
		return badRequest("Could not locate record")
	}
	rec, err := s.ix.GetRecord(r.Context(), did, coll, rkey)
	notFound := &apiError{http.StatusBadRequest, "RecordNotFound", "Could not locate record: at://" + did + "/" + coll + "/" + rkey}
	if errors.Is(err, cistern.ErrRecordNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	if haveWant && !want.Equals(rec.CID) {
		return notFound
	}
	out, err := toRecordJSON(rec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// listRecords answers com.atproto.repo.listRecords. Like the reference PDS,
// the cursor is the record key of the last record of the page whenever the
// page is not empty; a client reads until a page comes back empty (or
// without a cursor). A repo that is unknown, or whose account is not
// active, is 400 InvalidRequest "Could not find repo: <repo>", as there.
func (s *Server) listRecords(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	id := p.identifier("repo")
	coll := p.nsid("collection", true)
	limit := p.integer("limit", 50, 1, 100)
	cursor := p.rkey("cursor", false)
	reverse := p.boolean("reverse")
	if p.err != nil {
		return p.err
	}
	did, err := s.activeRepo(r.Context(), id)
	if err != nil {
		return err
	}
	if did == "" {
		return badRequest("Could not find repo: %s", p.q.Get("repo"))
	}
	page, err := s.ix.ListRecords(r.Context(), did, coll, cistern.ListOptions{Limit: limit, Cursor: cursor, Reverse: reverse})
	if err != nil {
		return err
	}
	recs, err := toRecordsJSON(page.Records)
	if err != nil {
		return err
	}
	out := recordPageJSON{Records: recs}
	if n := len(page.Records); n > 0 {
		out.Cursor = page.Records[n-1].RKey // as the PDS: on every non-empty page
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// describeRepo answers com.atproto.repo.describeRepo. Collections are the
// collections stored for the repo, which the filter may narrow.
func (s *Server) describeRepo(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	id := p.identifier("repo")
	if p.err != nil {
		return p.err
	}
	did, err := s.resolveRepo(r.Context(), id, p.q.Get("repo"))
	if err != nil {
		return err
	}
	counts, err := s.ix.CollectionCounts(r.Context(), did)
	if err != nil {
		return err
	}
	colls := make([]string, 0, len(counts))
	for c := range counts {
		colls = append(colls, c)
	}
	slices.Sort(colls)
	handle := syntax.HandleInvalid.String()
	if repo, err := s.ix.Repo(r.Context(), did); err == nil && repo.Handle != "" {
		handle = repo.Handle
	}
	out := map[string]any{
		"handle":          handle,
		"did":             did,
		"collections":     colls,
		"handleIsCorrect": handle != syntax.HandleInvalid.String(),
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if doc, err := s.ix.DIDDocument(ctx, did); err == nil {
		out["didDoc"] = doc
	} else {
		s.log.Warn("httpapi: describeRepo: no DID document", "did", did, "err", err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// trackedRepo reads the did parameter and the repo's state; an untracked or
// deleted repo is RepoNotFound.
func (s *Server) trackedRepo(r *http.Request) (*cistern.Repo, error) {
	p := newParams(r)
	did := p.did("did")
	if p.err != nil {
		return nil, p.err
	}
	repo, err := s.ix.Repo(r.Context(), did)
	if errors.Is(err, cistern.ErrNotTracked) || (err == nil && repo.State == store.StateDeleted) {
		return nil, repoNotFound(did)
	}
	return repo, err
}

// getRepoStatus answers com.atproto.sync.getRepoStatus with the state the
// indexer holds: the rev of the last commit applied, and whether the
// account is active.
func (s *Server) getRepoStatus(w http.ResponseWriter, r *http.Request) error {
	repo, err := s.trackedRepo(r)
	if err != nil {
		return err
	}
	out := map[string]any{"did": repo.DID, "active": repo.State.Active()}
	if repo.State.Active() {
		if repo.Rev != "" {
			out["rev"] = repo.Rev
		}
	} else {
		out["status"] = repo.State.String()
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getLatestCommit answers com.atproto.sync.getLatestCommit with the CID and
// rev of the last commit the indexer applied (and, as "data", its MST root).
func (s *Server) getLatestCommit(w http.ResponseWriter, r *http.Request) error {
	repo, err := s.trackedRepo(r)
	if err != nil {
		return err
	}
	if err := inactiveError(&repo.Repo, repo.DID); err != nil {
		return err
	}
	if repo.Rev == "" {
		return &apiError{http.StatusBadRequest, "RepoNotFound", "repo " + repo.DID + " has not been synced yet"}
	}
	out := map[string]string{"rev": repo.Rev, "data": repo.Data}
	if repo.Commit != "" {
		out["cid"] = repo.Commit
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// syncListRepos answers com.atproto.sync.listRepos over the tracked repos.
func (s *Server) syncListRepos(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	limit := p.integer("limit", 500, 1, 1000)
	cursor := p.raw("cursor", false)
	if cursor != "" {
		if _, err := syntax.ParseDID(cursor); err != nil {
			p.set(badRequest("cursor must be a DID from a previous page: %q", cursor))
		}
	}
	if p.err != nil {
		return p.err
	}
	type entry struct {
		DID    string `json:"did"`
		Head   string `json:"head,omitempty"`
		Data   string `json:"data,omitempty"`
		Rev    string `json:"rev"`
		Active bool   `json:"active"`
		Status string `json:"status,omitempty"`
	}
	out := struct {
		Cursor string  `json:"cursor,omitempty"`
		Repos  []entry `json:"repos"`
	}{Repos: []entry{}}
	// Deleted repos are left out, which may take more than one page of the
	// store.
	for len(out.Repos) < limit {
		page, err := s.ix.ListRepos(r.Context(), cistern.ListReposOptions{Cursor: cursor, Limit: limit - len(out.Repos)})
		if err != nil {
			return err
		}
		for _, rp := range page.Repos {
			if rp.State == store.StateDeleted {
				continue
			}
			e := entry{DID: rp.DID, Head: rp.Commit, Data: rp.Data, Rev: rp.Rev, Active: rp.State.Active()}
			if !e.Active {
				e.Status = rp.State.String()
			}
			out.Repos = append(out.Repos, e)
		}
		cursor = page.Cursor
		if cursor == "" {
			break
		}
		out.Cursor = cursor
	}
	if cursor == "" {
		out.Cursor = ""
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// countRecords answers dev.cistern.countRecords: {"count": n}, the records
// of a repo, of one collection when collection is given.
func (s *Server) countRecords(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	id := p.identifier("repo")
	coll := p.nsid("collection", false)
	if p.err != nil {
		return p.err
	}
	did, err := s.resolveRepo(r.Context(), id, p.q.Get("repo"))
	if err != nil {
		return err
	}
	n, err := s.ix.CountRecords(r.Context(), did, coll)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"count": n})
	return nil
}

// listCollection answers dev.cistern.listCollection: the records of one
// collection across every repo, most recently indexed first, in the shape
// of listRecords. The cursor is opaque (a decimal number) and is left out
// on the last page.
func (s *Server) listCollection(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	coll := p.nsid("collection", true)
	limit := p.integer("limit", 50, 1, 100)
	var cursor uint64
	if c := p.raw("cursor", false); c != "" {
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil || n == 0 {
			p.set(badRequest("cursor must be a cursor from a previous page: %q", c))
		}
		cursor = n
	}
	if p.err != nil {
		return p.err
	}
	page, err := s.ix.ListCollection(r.Context(), coll, cursor, limit)
	if err != nil {
		return err
	}
	recs, err := toRecordsJSON(page.Records)
	if err != nil {
		return err
	}
	out := recordPageJSON{Records: recs}
	if page.Cursor != 0 {
		out.Cursor = strconv.FormatUint(page.Cursor, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// RepoInfo is the answer of dev.cistern.getRepoInfo and GET /repos/{did}.
type RepoInfo struct {
	DID         string           `json:"did"`
	State       string           `json:"state"`
	Reason      string           `json:"reason,omitempty"`
	Rev         string           `json:"rev,omitempty"`
	Data        string           `json:"data,omitempty"`
	Handle      string           `json:"handle,omitempty"`
	PDS         string           `json:"pds,omitempty"`
	Status      string           `json:"status,omitempty"`
	Records     int64            `json:"records"`
	Collections map[string]int64 `json:"collections"`
	LastError   *RepoErrorInfo   `json:"lastError,omitempty"`
	Resync      bool             `json:"resync,omitempty"`
	Updated     *time.Time       `json:"updated,omitempty"`
}

// RepoErrorInfo describes a repo's last failure.
type RepoErrorInfo struct {
	Kind        string     `json:"kind,omitempty"`
	Message     string     `json:"message,omitempty"`
	Retries     int        `json:"retries"`
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
}

// repoJSON is one repo in GET /repos.
type repoJSON struct {
	DID       string         `json:"did"`
	State     string         `json:"state"`
	Reason    string         `json:"reason,omitempty"`
	Rev       string         `json:"rev,omitempty"`
	Handle    string         `json:"handle,omitempty"`
	PDS       string         `json:"pds,omitempty"`
	Status    string         `json:"status,omitempty"`
	LastError *RepoErrorInfo `json:"lastError,omitempty"`
	Updated   *time.Time     `json:"updated,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func errorInfo(r *store.Repo) *RepoErrorInfo {
	if r.LastError == "" && r.ErrorKind == "" && r.Retries == 0 {
		return nil
	}
	return &RepoErrorInfo{Kind: r.ErrorKind, Message: r.LastError, Retries: r.Retries, NextAttempt: timePtr(r.NextAttempt)}
}

func toRepoJSON(r *store.Repo) repoJSON {
	return repoJSON{DID: r.DID, State: r.State.String(), Reason: r.Reason, Rev: r.Rev, Handle: r.Handle,
		PDS: r.PDS, Status: r.Status, LastError: errorInfo(r), Updated: timePtr(r.Updated)}
}

// repoInfo reads the state and record counts of a tracked repo.
func (s *Server) repoInfo(ctx context.Context, did, given string) (*RepoInfo, error) {
	repo, err := s.ix.Repo(ctx, did)
	if errors.Is(err, cistern.ErrNotTracked) {
		return nil, repoNotFound(given)
	}
	if err != nil {
		return nil, err
	}
	counts, err := s.ix.CollectionCounts(ctx, did)
	if err != nil {
		return nil, err
	}
	return &RepoInfo{
		DID: repo.DID, State: repo.State.String(), Reason: repo.Reason, Rev: repo.Rev, Data: repo.Data,
		Handle: repo.Handle, PDS: repo.PDS, Status: repo.Status, Records: repo.Records, Collections: counts,
		LastError: errorInfo(&repo.Repo), Resync: repo.Resync, Updated: timePtr(repo.Updated),
	}, nil
}

// getRepoInfo answers dev.cistern.getRepoInfo for a DID or handle: state,
// rev, handle, PDS, record counts per collection and the last error.
func (s *Server) getRepoInfo(w http.ResponseWriter, r *http.Request) error {
	p := newParams(r)
	id := p.identifier("repo")
	if p.err != nil {
		return p.err
	}
	given := p.q.Get("repo")
	did := ""
	if d, err := id.AsDID(); err == nil {
		did = d.String()
	} else {
		h, _ := id.AsHandle()
		did, err = s.ix.LookupHandle(r.Context(), h.String())
		if errors.Is(err, cistern.ErrNotTracked) {
			return repoNotFound(given)
		}
		if err != nil {
			return err
		}
	}
	info, err := s.repoInfo(r.Context(), did, given)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

// recordPageJSON is a page of records as listRecords answers it.
type recordPageJSON struct {
	Cursor  string       `json:"cursor,omitempty"`
	Records []recordJSON `json:"records"`
}

// toRecordsJSON renders records as the PDS does (never a null list).
func toRecordsJSON(recs []*cistern.Record) ([]recordJSON, error) {
	out := make([]recordJSON, 0, len(recs))
	for _, rec := range recs {
		rj, err := toRecordJSON(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, rj)
	}
	return out, nil
}
