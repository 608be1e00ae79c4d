package httpapi

import (
	"net/http"
	"strings"

	"github.com/cistern-dev/cistern"
)

// refuseIfReadOnly answers 403 ReadOnly, without calling h, to a
// management write (a pattern whose method is POST, PUT, PATCH or DELETE)
// served by a read-only Indexer.
func (s *Server) refuseIfReadOnly(pattern string, h http.HandlerFunc) http.HandlerFunc {
	method, _, _ := strings.Cut(pattern, " ")
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if s.ix.ReadOnly() {
			writeError(w, http.StatusForbidden, "ReadOnly", cistern.ErrReadOnly.Error()+"; "+r.Method+" "+r.URL.Path+" is refused")
			return
		}
		h(w, r)
	}
}
