package tapcompat

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/internal/jsonhttp"
	"github.com/cistern-dev/cistern/store"
)

// Register mounts tap's endpoints on mux, each wrapped by protect (the
// host's admin check):
//
//	GET /channel              WebSocket delivery (see Service)
//	GET /resolve/{did}        the DID document
//	GET /info/{did}           {"did","handle","state","rev","records","error","retries"}
//	GET /stats/repo-count     {"repo_count":N}
//	GET /stats/record-count   {"record_count":N}
//	GET /stats/outbox-buffer  {"outbox_buffer":N}: events not yet acknowledged
//	GET /stats/resync-buffer  {"resync_buffer":N}: live commits held while their repo backfills
//	GET /stats/cursors        {"firehose":N}
//
// /repos/add, /repos/remove and /health are cistern's own (package
// httpapi), which take and answer what tap's clients send and expect.
func (s *Service) Register(mux *http.ServeMux, protect func(http.Handler) http.Handler) {
	h := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, protect(f)) }
	h("GET /channel", s.serveChannel)
	h("GET /resolve/{did}", s.serveResolve)
	h("GET /info/{did}", s.serveInfo)
	h("GET /stats/repo-count", s.serveRepoCount)
	h("GET /stats/record-count", s.serveRecordCount)
	h("GET /stats/outbox-buffer", s.serveOutboxBuffer)
	h("GET /stats/resync-buffer", s.serveResyncBuffer)
	h("GET /stats/cursors", s.serveCursors)
}

// writeJSON and writeError answer through internal/jsonhttp, in cistern's
// one JSON and error form.
func writeJSON(w http.ResponseWriter, status int, v any) { jsonhttp.Write(w, status, v) }

func writeError(w http.ResponseWriter, status int, name, message string) {
	jsonhttp.Error(w, status, name, message)
}

func (s *Service) internal(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	s.log.Error("tapcompat: request failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
}

// pathDID parses the {did} path value, answering 400 when it is not one.
func pathDID(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := r.PathValue("did")
	did, err := syntax.ParseDID(v)
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "path must name a valid DID: "+strconv.Quote(v))
		return "", false
	}
	return did.String(), true
}

func (s *Service) serveResolve(w http.ResponseWriter, r *http.Request) {
	did, ok := pathDID(w, r)
	if !ok {
		return
	}
	doc, err := s.ix.DIDDocument(r.Context(), did)
	if errors.Is(err, cistern.ErrNotTracked) {
		writeError(w, http.StatusNotFound, "NotFound", "DID not found: "+did)
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(doc)
}

// RepoInfo answers /info/{did}, in tap's form.
type RepoInfo struct {
	DID     string `json:"did"`
	Handle  string `json:"handle"`
	State   string `json:"state"`
	Rev     string `json:"rev"`
	Records int64  `json:"records"`
	Error   string `json:"error,omitempty"`
	Retries int    `json:"retries"`
}

// TapState names a repo state in tap's words: pending, resyncing (a
// backfill under way), active (synced), error, desynchronized,
// deactivated, takendown, suspended; cistern keeps deleted repos as
// "deleted", where tap forgets them.
func TapState(st store.RepoState) string {
	switch st {
	case store.StateBackfilling:
		return "resyncing"
	case store.StateSynced:
		return "active"
	}
	return st.String()
}

func (s *Service) serveInfo(w http.ResponseWriter, r *http.Request) {
	did, ok := pathDID(w, r)
	if !ok {
		return
	}
	repo, err := s.ix.Repo(r.Context(), did)
	if errors.Is(err, cistern.ErrNotTracked) {
		writeError(w, http.StatusNotFound, "RepoNotFound", "repo not found: "+did)
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	info := RepoInfo{
		DID:     repo.DID,
		Handle:  handleOf(repo.Handle),
		State:   TapState(repo.State),
		Rev:     repo.Rev,
		Records: repo.Records,
		Retries: repo.Retries,
	}
	if repo.LastError != "" {
		info.Error = repo.ErrorKind + ": " + repo.LastError
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Service) counts(ctx context.Context) (store.Counts, error) {
	var c store.Counts
	err := s.ix.Store().View(ctx, func(tx store.ReadTx) error {
		var err error
		c, err = tx.Counts()
		return err
	})
	return c, err
}

func (s *Service) serveRepoCount(w http.ResponseWriter, r *http.Request) {
	c, err := s.counts(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"repo_count": c.Repos - c.ReposByState[store.StateDeleted]})
}

func (s *Service) serveRecordCount(w http.ResponseWriter, r *http.Request) {
	c, err := s.counts(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"record_count": c.Records})
}

// Lag returns how many events of the log the delivery target has not
// acknowledged: the newest id minus the stored position.
func (s *Service) Lag(ctx context.Context) (uint64, error) {
	var newest uint64
	err := s.ix.Store().View(ctx, func(tx store.ReadTx) error {
		var err error
		_, newest, err = tx.EventBounds()
		return err
	})
	if err != nil {
		return 0, err
	}
	acked := s.outbox.Stats().Acked
	if c, err := s.ix.Consumer(ctx, s.outbox.Name()); err == nil {
		acked = max(acked, c.Acked)
	}
	if acked > newest {
		return 0, nil
	}
	return newest - acked, nil
}

// Stats returns the outbox's counters with its lag.
func (s *Service) Stats(ctx context.Context) (OutboxStats, error) {
	st := s.outbox.Stats()
	lag, err := s.Lag(ctx)
	st.Lag, st.Clients = lag, s.clients.Load()
	return st, err
}

func (s *Service) serveOutboxBuffer(w http.ResponseWriter, r *http.Request) {
	lag, err := s.Lag(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"outbox_buffer": lag})
}

// serveResyncBuffer counts the live commits held for repos that are not
// synced (the only ones that hold any). It scans those repos.
func (s *Service) serveResyncBuffer(w http.ResponseWriter, r *http.Request) {
	var n int64
	err := s.ix.Store().View(r.Context(), func(tx store.ReadTx) error {
		return tx.ScanRepos("", func(repo *store.Repo) (bool, error) {
			if repo.State == store.StateSynced {
				return true, nil
			}
			err := tx.ScanBuffer(repo.DID, func(*store.BufferedCommit) (bool, error) {
				n++
				return true, nil
			})
			return r.Context().Err() == nil, err
		})
	})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"resync_buffer": n})
}

// firehoseCursorKey is where the indexer keeps a source's firehose cursor
// (a decimal sequence number).
const firehoseCursorKey = "firehose/cursor/"

func (s *Service) serveCursors(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{}
	if len(s.opts.Sources) > 0 {
		err := s.ix.Store().View(r.Context(), func(tx store.ReadTx) error {
			v, err := tx.Meta(firehoseCursorKey + s.opts.Sources[0])
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if seq, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				out["firehose"] = seq
			}
			return nil
		})
		if err != nil {
			s.internal(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}
