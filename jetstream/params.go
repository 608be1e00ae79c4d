package jetstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
)

// Limits of a filter, as Jetstream's.
const (
	// MaxWantedCollections is the most collection patterns a filter holds,
	// counted after duplicates are removed.
	MaxWantedCollections = 100
	// MaxWantedDIDs is the most DIDs a filter holds, counted after
	// duplicates are removed.
	MaxWantedDIDs = 10_000
	// MaxClientMessageBytes bounds a message a client sends (options_update).
	MaxClientMessageBytes = 10_000_000
)

// ParamError says which parameter of a request or options_update is bad.
type ParamError struct {
	Param  string // "wantedCollections", "cursor", ...
	Reason string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Reason }

// Filter selects the events a subscriber receives, as Jetstream selects
// them: DIDs apply to every event; collections to commits only, so that a
// consumer of some collections still sees its repos' identity and account
// events. A Filter is immutable and safe for concurrent use; the zero value
// (or nil) passes everything.
type Filter struct {
	collections []string
	patterns    filter.Patterns
	dids        []string
	didSet      map[string]struct{}
	maxSize     int
}

// NewFilter returns the filter of a subscriber. collections are NSIDs or
// prefixes ending in ".*" (filter.ParsePattern); maxMessageSizeBytes drops
// events whose JSON is larger, 0 (or less, as Jetstream) meaning no limit.
// Duplicates are removed before the limits apply. A bad value returns a
// *ParamError naming wantedCollections or wantedDids.
func NewFilter(collections, dids []string, maxMessageSizeBytes int) (*Filter, error) {
	f := &Filter{maxSize: max(maxMessageSizeBytes, 0)}
	if len(collections) > 0 {
		seen := make(map[string]struct{}, len(collections))
		for _, c := range collections {
			if _, dup := seen[c]; dup {
				continue
			}
			if _, err := filter.ParsePattern(c); err != nil {
				return nil, &ParamError{"wantedCollections", err.Error()}
			}
			seen[c] = struct{}{}
			f.collections = append(f.collections, c)
			if len(f.collections) > MaxWantedCollections {
				return nil, &ParamError{"wantedCollections", fmt.Sprintf("more than %d collections", MaxWantedCollections)}
			}
		}
		ps, err := filter.ParsePatterns(f.collections)
		if err != nil {
			return nil, &ParamError{"wantedCollections", err.Error()}
		}
		f.patterns = ps
	}
	if len(dids) > 0 {
		f.didSet = make(map[string]struct{}, min(len(dids), MaxWantedDIDs+1))
		for _, d := range dids {
			if _, dup := f.didSet[d]; dup {
				continue
			}
			if _, err := syntax.ParseDID(d); err != nil {
				return nil, &ParamError{"wantedDids", fmt.Sprintf("%q is not a DID: %v", d, err)}
			}
			f.didSet[d] = struct{}{}
			f.dids = append(f.dids, d)
			if len(f.dids) > MaxWantedDIDs {
				return nil, &ParamError{"wantedDids", fmt.Sprintf("more than %d DIDs", MaxWantedDIDs)}
			}
		}
	}
	return f, nil
}

// Collections returns the collection patterns, without duplicates.
func (f *Filter) Collections() []string {
	if f == nil {
		return nil
	}
	return append([]string(nil), f.collections...)
}

// DIDs returns the wanted DIDs, without duplicates.
func (f *Filter) DIDs() []string {
	if f == nil {
		return nil
	}
	return append([]string(nil), f.dids...)
}

// MaxMessageSizeBytes returns the size limit of an event's JSON, 0 for none.
func (f *Filter) MaxMessageSizeBytes() int {
	if f == nil {
		return 0
	}
	return f.maxSize
}

// Match reports whether ev passes the filter (the size limit aside).
func (f *Filter) Match(ev *store.Event) bool {
	if f == nil {
		return true
	}
	if f.didSet != nil {
		if _, ok := f.didSet[ev.DID]; !ok {
			return false
		}
	}
	if f.patterns != nil && ev.Kind == store.KindRecord {
		return f.patterns.Match(ev.Collection)
	}
	return true
}

// Request is a parsed /subscribe request.
type Request struct {
	// Filter from wantedCollections, wantedDids and maxMessageSizeBytes.
	Filter *Filter
	// Cursor is the unix-microseconds cursor; HasCursor says whether one
	// was given.
	Cursor    int64
	HasCursor bool
	// Compress is set by compress=true or a Socket-Encoding header naming
	// zstd.
	Compress bool
	// RequireHello holds events back until the client's first
	// options_update.
	RequireHello bool
}

// ParseRequest reads the parameters of a /subscribe request. A bad value
// returns a *ParamError naming the parameter.
func ParseRequest(r *http.Request) (Request, error) {
	var req Request
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		// Go refuses queries of more than 10,000 parameters
		// (GODEBUG urlmaxqueryparams): name the list that overflows.
		if strings.Count(r.URL.RawQuery, "wantedDids=") > MaxWantedDIDs {
			return req, &ParamError{"wantedDids", fmt.Sprintf("more than %d DIDs", MaxWantedDIDs)}
		}
		return req, &ParamError{"query", err.Error()}
	}
	maxSize := 0
	if v := q.Get("maxMessageSizeBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return req, &ParamError{"maxMessageSizeBytes", fmt.Sprintf("%q is not an integer", v)}
		}
		// As Jetstream: a negative limit means none.
		maxSize = int(min(max(n, 0), 1<<31-1))
	}
	f, err := NewFilter(q["wantedCollections"], q["wantedDids"], maxSize)
	if err != nil {
		return req, err
	}
	req.Filter = f
	if q.Has("cursor") {
		v := q.Get("cursor")
		c, err := strconv.ParseInt(v, 10, 64)
		if err != nil || c < 0 {
			return req, &ParamError{"cursor", fmt.Sprintf("%q is not a non-negative integer (unix microseconds)", v)}
		}
		req.Cursor, req.HasCursor = c, true
	}
	for _, p := range []struct {
		name string
		dst  *bool
	}{{"compress", &req.Compress}, {"requireHello", &req.RequireHello}} {
		if v := q.Get(p.name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return req, &ParamError{p.name, fmt.Sprintf("%q is not true or false", v)}
			}
			*p.dst = b
		}
	}
	if strings.Contains(strings.ToLower(r.Header.Get("Socket-Encoding")), "zstd") {
		req.Compress = true
	}
	return req, nil
}

// ClientMessage is a message a client sends over the socket.
type ClientMessage struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// OptionsUpdate is the payload of an options_update message. It replaces
// the whole filter: a field left out selects everything.
type OptionsUpdate struct {
	WantedCollections   []string `json:"wantedCollections"`
	WantedDIDs          []string `json:"wantedDids"`
	MaxMessageSizeBytes int      `json:"maxMessageSizeBytes"`
}

// ParseClientMessage reads a client message. It returns the new filter of
// an options_update, or nil (and no error) for a message of another type,
// which Jetstream ignores. A malformed message or options_update returns
// an error; a bad value in it a *ParamError.
func ParseClientMessage(b []byte) (*Filter, error) {
	var m ClientMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("malformed message: %w", err)
	}
	if m.Type != "options_update" {
		return nil, nil
	}
	var u OptionsUpdate
	if err := json.Unmarshal(m.Payload, &u); err != nil {
		return nil, fmt.Errorf("malformed options_update payload: %w", err)
	}
	return NewFilter(u.WantedCollections, u.WantedDIDs, u.MaxMessageSizeBytes)
}
