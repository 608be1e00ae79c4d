package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// Management input that used to be accepted, or answered in HTML: a null
// filter, a filter too large to work with, huge paths echoed back, paths
// the mux would clean and redirect.
func TestManagement_Input(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 2))
	did := alice.DID().String()
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{did}})
	waitSynced(t, ix, did)
	const tok = "tok"
	api := serve(t, ix, httpapi.Options{AdminToken: tok}).URL

	many := make([]string, 20000)
	for i := range many {
		many[i] = fmt.Sprintf(`"com.example.c%d"`, i)
	}
	for _, tc := range []struct {
		method, body string
		want         string // in the message
	}{
		{"PUT", `null`, "not null"},
		{"PUT", ` null `, "not null"},
		{"PATCH", `null`, "not null"},
		{"PUT", `[]`, "not an array"},
		{"PUT", `"x"`, "not a string"},
		{"PUT", `7`, "not a number"},
		{"PUT", `{"dids":["` + did + `"],"collections":[` + strings.Join(many, ",") + `]}`, "collections lists 20000 entries; at most 1000"},
		{"PATCH", `{"addCollections":[` + strings.Join(many, ",") + `]}`, "addCollections lists 20000 entries; at most 1000"},
	} {
		a := do(t, tc.method, api+"/filter", tok, []byte(tc.body))
		if a.Status != http.StatusBadRequest || a.errName() != "InvalidRequest" || !strings.Contains(a.errMessage(), tc.want) {
			t.Errorf("%s /filter %.40s: %d %.300s, want 400 saying %q", tc.method, tc.body, a.Status, a.Body, tc.want)
		}
	}
	if a := do(t, "POST", api+"/repos/add", tok, []byte(`null`)); a.Status != http.StatusBadRequest {
		t.Errorf("POST /repos/add null: %d %s", a.Status, a.Body)
	}
	if f := ix.Filter().Spec(); len(f.DIDs) != 1 || f.DIDs[0] != did || len(f.Collections) != 0 {
		t.Fatalf("refused bodies changed the filter: %+v", f)
	}

	// A long path is not echoed whole.
	long := "/" + strings.Repeat("a", 1<<20)
	a := do(t, "GET", api+long, "", nil)
	if a.Status != http.StatusNotFound || a.errName() != "NotFound" || len(a.Body) > 2048 {
		t.Errorf("GET of a 1 MiB path: %d, %d bytes", a.Status, len(a.Body))
	}
	if a := do(t, "GET", api+"/xrpc/com.atproto.repo.getRecord?repo="+strings.Repeat("x", 100000), "", nil); a.Status != http.StatusBadRequest || len(a.Body) > 2048 {
		t.Errorf("a 100 kB parameter: %d, %d bytes", a.Status, len(a.Body))
	}

	// Paths the mux would clean get a JSON 404 (no redirect, no HTML),
	// whether or not the cleaned path exists, with or without the token.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/repos/../stats", "//stats", "/stats/.", "/xrpc/../health", "/a/./b", "/repos/%2e%2e/stats"} {
		for _, token := range []string{"", tok} {
			req, _ := http.NewRequest("GET", api+p, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("GET %s: %d %s", p, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		}
	}
	if a := do(t, "GET", api+"/repos/../stats", tok, nil); !strings.Contains(a.errMessage(), `did you mean "/stats"`) {
		t.Errorf("the answer does not name the clean path: %s", a.Body)
	}
}

// NewHTTPServer applies the same rule to every handler it serves, so that
// a host's own mux never answers an HTML redirect.
func TestCanonicalPaths(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	h := httpapi.NewHTTPServer(mux, httpapi.Limits{}, nil).Handler
	for _, tc := range []struct {
		path string
		want int
	}{{"/page", 200}, {"/x/../page", 404}, {"//page", 404}} {
		rec := newRecorder(h, "GET", tc.path)
		if rec.Code != tc.want || (tc.want == 404 && !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json")) {
			t.Errorf("GET %s: %d %s %s", tc.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
}
