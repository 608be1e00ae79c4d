package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/internal/jsonhttp"
)

// Error is the JSON body of every error answer: {"error":"Name","message":"..."}.
type Error struct {
	// Name is the XRPC error name: InvalidRequest, RecordNotFound,
	// RepoNotFound, MethodNotImplemented, InternalServerError, ...
	Name string `json:"error"`
	// Message says what went wrong in words.
	Message string `json:"message,omitempty"`
}

func (e *Error) Error() string { return e.Name + ": " + e.Message }

// apiError is an error with the status and name to answer it with.
type apiError struct {
	status        int
	name, message string
}

func (e *apiError) Error() string { return e.name + ": " + e.message }

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidRequest", fmt.Sprintf(format, args...)}
}

// writeJSON and writeError answer through internal/jsonhttp, as every HTTP
// surface of cistern does.
func writeJSON(w http.ResponseWriter, status int, v any) { jsonhttp.Write(w, status, v) }

func writeError(w http.ResponseWriter, status int, name, message string) {
	jsonhttp.Error(w, status, name, message)
}

// fail answers err: an *apiError as it says, anything else as a 500 (logged).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeError(w, ae.status, ae.name, ae.message)
		return
	}
	if errors.Is(err, cistern.ErrInvalidArgument) || errors.Is(err, cistern.ErrExcluded) {
		// Bad input the handler's own checks let through, or a filter
		// changed between a check and the call.
		writeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	if errors.Is(err, cistern.ErrReadOnly) {
		writeError(w, http.StatusForbidden, "ReadOnly", err.Error())
		return
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		return
	}
	s.log.Error("httpapi: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "InternalServerError", "Internal Server Error")
}

// params reads and validates query parameters, collecting the first error.
type params struct {
	q   url.Values
	err *apiError
}

func newParams(r *http.Request) *params { return &params{q: r.URL.Query()} }

func (p *params) set(err *apiError) {
	if p.err == nil {
		p.err = err
	}
}

// raw returns a parameter as given; a required one must be present.
func (p *params) raw(name string, required bool) string {
	vs, ok := p.q[name]
	if !ok || len(vs) == 0 || vs[0] == "" {
		if required {
			p.set(badRequest("Error: Params must have the property %q", name))
		}
		return ""
	}
	if len(vs) > 1 {
		p.set(badRequest("%s must be given once", name))
	}
	return vs[0]
}

func (p *params) did(name string) string {
	v := p.raw(name, true)
	if v == "" {
		return ""
	}
	d, err := syntax.ParseDID(v)
	if err != nil {
		p.set(badRequest("%s must be a valid DID: %v", name, err))
		return ""
	}
	return d.String()
}

// identifier reads a DID or handle.
func (p *params) identifier(name string) syntax.AtIdentifier {
	v := p.raw(name, true)
	if v == "" {
		return ""
	}
	id, err := syntax.ParseAtIdentifier(v)
	if err != nil {
		p.set(badRequest("%s must be a valid DID or handle: %q", name, v))
		return ""
	}
	return id
}

func (p *params) nsid(name string, required bool) string {
	v := p.raw(name, required)
	if v == "" {
		return ""
	}
	n, err := syntax.ParseNSID(v)
	if err != nil {
		p.set(badRequest("%s must be a valid NSID: %q", name, v))
		return ""
	}
	return n.String()
}

func (p *params) rkey(name string, required bool) string {
	v := p.raw(name, required)
	if v == "" {
		return ""
	}
	k, err := syntax.ParseRecordKey(v)
	if err != nil {
		p.set(badRequest("%s must be a valid record key: %q", name, v))
		return ""
	}
	return k.String()
}

func (p *params) cid(name string) (cid.Cid, bool) {
	v := p.raw(name, false)
	if v == "" {
		return cid.Undef, false
	}
	c, err := cid.Decode(v)
	if err != nil {
		p.set(badRequest("%s must be a valid CID: %q", name, v))
		return cid.Undef, false
	}
	return c, true
}

// integer reads an optional integer in [lo, hi].
func (p *params) integer(name string, def, lo, hi int) int {
	v := p.raw(name, false)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.set(badRequest("%s must be an integer: %q", name, v))
		return def
	}
	if n < lo || n > hi {
		p.set(badRequest("%s must be between %d and %d, got %d", name, lo, hi, n))
		return def
	}
	return n
}

func (p *params) boolean(name string) bool {
	switch v := p.raw(name, false); v {
	case "", "false":
		return false
	case "true":
		return true
	default:
		p.set(badRequest("%s must be true or false: %q", name, v))
		return false
	}
}

// decodeBody decodes a JSON request body into v, refusing anything but a
// JSON object (null included), unknown fields, trailing data and bodies
// over the size limit.
func decodeBody(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	var raw json.RawMessage
	err := dec.Decode(&raw)
	if err == nil {
		if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
			return badRequest("request body must be a JSON object, not %s", jsonKind(t))
		}
		inner := json.NewDecoder(bytes.NewReader(raw))
		inner.DisallowUnknownFields()
		err = inner.Decode(v)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return &apiError{http.StatusRequestEntityTooLarge, "PayloadTooLarge", fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
		case isTimeout(err):
			return &apiError{http.StatusRequestTimeout, "RequestTimeout", "the request body was not received in time"}
		case errors.Is(err, io.EOF):
			return badRequest("request body is empty; a JSON object is expected")
		default:
			return badRequest("request body is not valid JSON for this endpoint: %v", err)
		}
	}
	if dec.More() {
		return badRequest("request body has data after the JSON object")
	}
	return nil
}

// jsonKind names the kind of a JSON value by its first byte.
func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case 'n':
		return "null"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}
