package testnet

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// handler returns the host's XRPC routes.
func (h *Host) handler() http.Handler {
	routes := map[string]http.HandlerFunc{
		"com.atproto.sync.getRepo":         h.serveGetRepo,
		"com.atproto.sync.getRepoStatus":   h.serveGetRepoStatus,
		"com.atproto.sync.getLatestCommit": h.serveGetLatestCommit,
		"com.atproto.sync.getBlocks":       h.serveGetBlocks,
		"com.atproto.sync.listRepos": func(w http.ResponseWriter, r *http.Request) {
			h.net.serveListRepos(w, r, h)
		},
		"com.atproto.sync.getRecord":    h.serveSyncGetRecord,
		"com.atproto.repo.describeRepo": h.serveDescribeRepo,
		"com.atproto.repo.getRecord":    h.serveGetRecord,
		"com.atproto.repo.listRecords":  h.serveListRecords,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nsid, ok := strings.CutPrefix(r.URL.Path, "/xrpc/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		h.counters.add(nsid)
		if h.faults.intercept(w, nsid) {
			return
		}
		route, ok := routes[nsid]
		if !ok {
			writeXRPCError(w, http.StatusNotImplemented, "MethodNotImplemented", "method not implemented: "+nsid)
			return
		}
		if r.Method != http.MethodGet {
			writeXRPCError(w, http.StatusMethodNotAllowed, "InvalidRequest", "only GET is supported")
			return
		}
		route(w, r)
	})
}

// accountParam resolves the named query parameter (a DID, or a handle when
// allowHandle) to an account on this host, whatever its status; the account
// is nil when the host has none by that name. It writes InvalidRequest and
// returns false when the parameter is missing or malformed.
func (h *Host) accountParam(w http.ResponseWriter, r *http.Request, name string, allowHandle bool) (*Account, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "Error: Params must have the property \""+name+"\"")
		return nil, false
	}
	var a *Account
	if did, err := syntax.ParseDID(v); err == nil {
		a = h.net.Lookup(did)
	} else if hdl, err := syntax.ParseHandle(v); err == nil && allowHandle {
		a = h.net.LookupHandle(hdl)
	} else {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", name+" must be a valid DID"+map[bool]string{true: " or handle", false: ""}[allowHandle])
		return nil, false
	}
	if a == nil || a.Host() != h {
		return nil, true
	}
	return a, true
}

// repoParam resolves the named query parameter (a DID, or a handle when
// allowHandle) to an account on this host and checks that it is active, as
// the reference PDS's sync methods and describeRepo do
// (assertRepoAvailability). It writes the reference PDS's error
// (RepoNotFound, RepoDeactivated, RepoTakendown, RepoSuspended) and returns
// nil when it cannot.
func (h *Host) repoParam(w http.ResponseWriter, r *http.Request, name string, allowHandle bool) *Account {
	a, ok := h.accountParam(w, r, name, allowHandle)
	if !ok {
		return nil
	}
	v := r.URL.Query().Get(name)
	if a == nil {
		writeXRPCError(w, http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: "+v)
		return nil
	}
	switch st := a.Status(); st {
	case StatusActive:
		return a
	case StatusDeleted:
		writeXRPCError(w, http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: "+v)
	case StatusDeactivated:
		writeXRPCError(w, http.StatusBadRequest, "RepoDeactivated", "Repo has been deactivated: "+v)
	case StatusTakendown:
		writeXRPCError(w, http.StatusBadRequest, "RepoTakendown", "Repo has been takendown: "+v)
	case StatusSuspended:
		writeXRPCError(w, http.StatusBadRequest, "RepoSuspended", "Repo has been suspended: "+v)
	}
	return nil
}

// activeParam resolves the repo query parameter (a DID or handle) to an
// active account on this host, the way the reference PDS's getRecord and
// listRecords look a repo up (getDidForActor, which leaves out deactivated
// and taken-down accounts): the account is nil when the host has none by
// that name or its account is not active. It writes InvalidRequest and
// returns false when the parameter is missing or malformed.
func (h *Host) activeParam(w http.ResponseWriter, r *http.Request) (*Account, bool) {
	a, ok := h.accountParam(w, r, "repo", true)
	if !ok || a == nil || a.Status() != StatusActive {
		return nil, ok
	}
	return a, true
}

func (h *Host) serveGetRepo(w http.ResponseWriter, r *http.Request) {
	a := h.repoParam(w, r, "did", false)
	if a == nil {
		return
	}
	// "since" is accepted and ignored: the whole repo is always served.
	root, blks := a.snapshot()
	w.Header().Set("Content-Type", "application/vnd.ipld.car")
	wait, size, truncAt := h.faults.bodyFaults()
	if wait == 0 && truncAt < 0 {
		_ = writeCAR(w, root, blks)
		return
	}
	_ = writeCAR(&faultWriter{w: w, req: r, wait: wait, size: size, left: truncAt}, root, blks)
}

func (h *Host) serveGetRepoStatus(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query().Get("did")
	did, err := syntax.ParseDID(v)
	if err != nil {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "did must be a valid DID")
		return
	}
	a := h.net.Lookup(did)
	if a == nil || a.Host() != h || a.Status() == StatusDeleted {
		writeXRPCError(w, http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: "+v)
		return
	}
	a.mu.Lock()
	out := map[string]any{"did": a.did.String(), "active": a.status == StatusActive}
	if a.status == StatusActive {
		out["rev"] = a.commit.Rev
	} else {
		out["status"] = string(a.status)
	}
	a.mu.Unlock()
	writeJSON(w, out)
}

func (h *Host) serveGetLatestCommit(w http.ResponseWriter, r *http.Request) {
	a := h.repoParam(w, r, "did", false)
	if a == nil {
		return
	}
	a.mu.Lock()
	out := map[string]string{"cid": a.commitCID.String(), "rev": a.commit.Rev}
	a.mu.Unlock()
	writeJSON(w, out)
}

// serveListRepos answers com.atproto.sync.listRepos for one host, or for
// every host when h is nil (the relay).
func (n *Network) serveListRepos(w http.ResponseWriter, r *http.Request, h *Host) {
	q := r.URL.Query()
	limit, ok := parseLimit(w, q.Get("limit"), 500, 1, 1000)
	if !ok {
		return
	}
	type repoEntry struct {
		DID    string `json:"did"`
		Head   string `json:"head"`
		Rev    string `json:"rev"`
		Active bool   `json:"active"`
		Status string `json:"status,omitempty"`
	}
	out := struct {
		Cursor string      `json:"cursor,omitempty"`
		Repos  []repoEntry `json:"repos"`
	}{Repos: []repoEntry{}}
	for _, a := range n.accountsAfter(q.Get("cursor")) {
		if h != nil && a.Host() != h {
			continue
		}
		a.mu.Lock()
		e := repoEntry{DID: a.did.String(), Head: a.commitCID.String(), Rev: a.commit.Rev, Active: a.status == StatusActive}
		if !e.Active {
			e.Status = string(a.status)
		}
		a.mu.Unlock()
		if e.Status == string(StatusDeleted) {
			continue
		}
		out.Repos = append(out.Repos, e)
		if len(out.Repos) == limit {
			out.Cursor = e.DID
			break
		}
	}
	writeJSON(w, out)
}

// recordParams reads and checks the collection and rkey parameters.
func recordParams(w http.ResponseWriter, r *http.Request) (string, string, bool) {
	q := r.URL.Query()
	coll, err := syntax.ParseNSID(q.Get("collection"))
	if err != nil {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "collection must be a valid NSID")
		return "", "", false
	}
	rkey, err := syntax.ParseRecordKey(q.Get("rkey"))
	if err != nil {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "rkey must be a valid record key")
		return "", "", false
	}
	return coll.String(), rkey.String(), true
}

func (h *Host) serveSyncGetRecord(w http.ResponseWriter, r *http.Request) {
	a := h.repoParam(w, r, "did", false)
	if a == nil {
		return
	}
	coll, rkey, ok := recordParams(w, r)
	if !ok {
		return
	}
	root, blks, found := a.proof([]byte(coll + "/" + rkey))
	if !found {
		writeXRPCError(w, http.StatusNotFound, "RecordNotFound", "Could not locate record: at://"+a.did.String()+"/"+coll+"/"+rkey)
		return
	}
	w.Header().Set("Content-Type", "application/vnd.ipld.car")
	_ = writeCAR(w, root, blks)
}

func (h *Host) serveDescribeRepo(w http.ResponseWriter, r *http.Request) {
	a := h.repoParam(w, r, "repo", true)
	if a == nil {
		return
	}
	doc := a.DIDDocument()
	writeJSON(w, map[string]any{
		"handle":          a.Handle().String(),
		"did":             a.did.String(),
		"didDoc":          doc,
		"collections":     a.Collections(),
		"handleIsCorrect": true,
	})
}

// recordJSON is a record as com.atproto.repo.getRecord and listRecords
// answer it.
type recordJSON struct {
	URI   string          `json:"uri"`
	CID   string          `json:"cid"`
	Value json.RawMessage `json:"value"`
}

func toRecordJSON(did syntax.DID, rec Record) (recordJSON, error) {
	m, err := atdata.UnmarshalCBOR(rec.Value)
	if err != nil {
		return recordJSON{}, err
	}
	v, err := json.Marshal(m)
	if err != nil {
		return recordJSON{}, err
	}
	return recordJSON{URI: "at://" + did.String() + "/" + rec.Path(), CID: rec.CID.String(), Value: v}, nil
}

// serveGetRecord answers com.atproto.repo.getRecord as the reference PDS
// without an app view does: a repo that is unknown or not active is 400
// InvalidRequest "Could not locate record"; an absent record 400
// RecordNotFound.
func (h *Host) serveGetRecord(w http.ResponseWriter, r *http.Request) {
	a, ok := h.activeParam(w, r)
	if !ok {
		return
	}
	if a == nil {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "Could not locate record")
		return
	}
	coll, rkey, ok := recordParams(w, r)
	if !ok {
		return
	}
	rec, found := a.Record(coll, rkey)
	if want := r.URL.Query().Get("cid"); found && want != "" {
		c, err := cid.Decode(want)
		if err != nil {
			writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "cid must be a valid CID")
			return
		}
		found = c == rec.CID
	}
	if !found {
		writeXRPCError(w, http.StatusBadRequest, "RecordNotFound", "Could not locate record: at://"+a.did.String()+"/"+coll+"/"+rkey)
		return
	}
	out, err := toRecordJSON(a.did, rec)
	if err != nil {
		writeXRPCError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	writeJSON(w, out)
}

// serveListRecords answers com.atproto.repo.listRecords; a repo that is
// unknown or not active is 400 InvalidRequest "Could not find repo: <repo>",
// as at the reference PDS.
func (h *Host) serveListRecords(w http.ResponseWriter, r *http.Request) {
	a, ok := h.activeParam(w, r)
	if !ok {
		return
	}
	if a == nil {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "Could not find repo: "+r.URL.Query().Get("repo"))
		return
	}
	q := r.URL.Query()
	coll, err := syntax.ParseNSID(q.Get("collection"))
	if err != nil {
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "collection must be a valid NSID")
		return
	}
	limit, ok := parseLimit(w, q.Get("limit"), 50, 1, 100)
	if !ok {
		return
	}
	reverse := false
	switch q.Get("reverse") {
	case "", "false":
	case "true":
		reverse = true
	default:
		writeXRPCError(w, http.StatusBadRequest, "InvalidRequest", "reverse must be a boolean")
		return
	}
	cursor := q.Get("cursor")
	var recs []Record
	for _, rec := range a.Records() {
		if rec.Collection == coll.String() {
			recs = append(recs, rec)
		}
	}
	// Records come in rkey order; the reference PDS lists newest (highest
	// rkey) first unless reverse=true.
	if !reverse {
		slices.Reverse(recs)
	}
	out := struct {
		Cursor  string       `json:"cursor,omitempty"`
		Records []recordJSON `json:"records"`
	}{Records: []recordJSON{}}
	for _, rec := range recs {
		if cursor != "" && ((!reverse && rec.RKey >= cursor) || (reverse && rec.RKey <= cursor)) {
			continue
		}
		rj, err := toRecordJSON(a.did, rec)
		if err != nil {
			writeXRPCError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
			return
		}
		out.Records = append(out.Records, rj)
		out.Cursor = rec.RKey
		if len(out.Records) == limit {
			break
		}
	}
	writeJSON(w, out)
}

var _ = bytes.NewReader
