package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// send makes one request with the given headers (name, value pairs) and a
// raw body.
func send(t *testing.T, method, u, body string, kv ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "Host" {
			req.Host = kv[i+1]
			continue
		}
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Body: b, Header: resp.Header}
}

// The cases of the hardening report, replayed as curl sent them, from a
// loopback client: a cross-site POST (an Origin of another site, a
// text/plain body) and a DNS-rebinding read (a foreign Host header). None
// may be served, and nothing may change.
func TestAdmin_RefusesCrossSiteAndRebinding(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 2))
	did := alice.DID().String()
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{did}})
	waitSynced(t, ix, did)
	const tok = "s3cret"

	for _, opts := range []struct {
		name string
		o    httpapi.Options
	}{
		{"no token configured", httpapi.Options{}},
		{"token with loopback reads", httpapi.Options{AdminToken: tok, LoopbackReads: true}},
		{"token", httpapi.Options{AdminToken: tok}},
	} {
		t.Run(opts.name, func(t *testing.T) {
			api := serve(t, ix, opts.o).URL
			body := `{"dids":["` + did + `"]}`
			for _, tc := range []struct {
				name, method, path, body string
				headers                  []string
				status                   int
				errName                  string
			}{
				{"cross-site resync", "POST", "/repos/resync", body,
					[]string{"Origin", "http://evil.example", "Content-Type", "text/plain"}, 0, ""},
				{"cross-site remove", "POST", "/repos/remove", `{"dids":["` + did + `"],"deleteData":true}`,
					[]string{"Origin", "http://evil.example", "Content-Type", "text/plain"}, 0, ""},
				{"cross-site remove with the token", "POST", "/repos/remove", `{"dids":["` + did + `"],"deleteData":true}`,
					[]string{"Origin", "http://evil.example", "Content-Type", "application/json", "Authorization", "Bearer " + tok}, 403, "CrossOriginRefused"},
				{"a null origin", "PUT", "/filter", `{}`,
					[]string{"Origin", "null", "Content-Type", "application/json", "Authorization", "Bearer " + tok}, 403, "CrossOriginRefused"},
				{"rebinding read", "GET", "/repos", "", []string{"Host", "attacker.example"}, 0, ""},
				{"rebinding status", "GET", "/stats", "", []string{"Host", "attacker.example:2470"}, 0, ""},
				{"form post without token", "POST", "/repos/resync", body,
					[]string{"Content-Type", "application/x-www-form-urlencoded"}, 0, ""},
				{"mutating without token", "PATCH", "/filter", `{"removeDids":["` + did + `"]}`,
					[]string{"Content-Type", "application/json"}, 0, ""},
				{"text/plain with the token", "POST", "/repos/remove", `{"dids":["` + did + `"],"deleteData":true}`,
					[]string{"Content-Type", "text/plain", "Authorization", "Bearer " + tok}, 415, "UnsupportedMediaType"},
				{"no content type with the token", "PUT", "/filter", `{}`,
					[]string{"Authorization", "Bearer " + tok}, 415, "UnsupportedMediaType"},
			} {
				if opts.o.AdminToken == "" && strings.Contains(strings.Join(tc.headers, " "), "Bearer") {
					// Without a configured token a bearer header is just
					// wrong credentials: refused like the others.
					tc.status, tc.errName = 0, ""
				}
				a := send(t, tc.method, api+tc.path, tc.body, tc.headers...)
				if tc.status == 0 {
					if a.Status != 401 && a.Status != 403 {
						t.Errorf("%s: %d %s, want 401 or 403", tc.name, a.Status, a.Body)
					}
				} else if a.Status != tc.status || a.errName() != tc.errName {
					t.Errorf("%s: %d %s, want %d %s", tc.name, a.Status, a.Body, tc.status, tc.errName)
				}
				if a.errName() == "" || a.errMessage() == "" {
					t.Errorf("%s: the refusal is not a JSON error: %s", tc.name, a.Body)
				}
			}
			// Nothing changed: alice is tracked, synced, with her records.
			if f := ix.Filter().Spec(); len(f.DIDs) != 1 {
				t.Fatalf("filter changed: %+v", f)
			}
			if n, _ := ix.CountRecords(context.Background(), did, ""); n != 2 {
				t.Fatalf("alice has %d records", n)
			}
		})
	}
}

// What is allowed: the token in any letter case, the server's own origin,
// JSON content types, and token-less reads from a loopback client naming
// a local host.
func TestAdmin_Allows(t *testing.T) {
	net := testnet.New(t)
	ix := openIndexer(t, net, filter.Spec{})
	const tok = "s3cret"
	api := serve(t, ix, httpapi.Options{AdminToken: tok, LoopbackReads: true}).URL
	host := strings.TrimPrefix(api, "http://")
	port := host[strings.LastIndex(host, ":"):]
	for _, tc := range []struct {
		name, method, path, body string
		headers                  []string
	}{
		{"lowercase bearer", "GET", "/filter", "", []string{"Authorization", "bearer " + tok}},
		{"upper case BEARER", "PATCH", "/filter", `{"addSignals":["app.bsky.feed.post"]}`,
			[]string{"Authorization", "BEARER " + tok, "Content-Type", "application/json"}},
		{"json with a charset", "PATCH", "/filter", `{"addSignals":["app.bsky.feed.like"]}`,
			[]string{"Authorization", "Bearer " + tok, "Content-Type", "application/json; charset=utf-8"}},
		{"a +json type", "PATCH", "/filter", `{"removeSignals":["app.bsky.feed.like"]}`,
			[]string{"Authorization", "Bearer " + tok, "Content-Type", "application/merge-patch+json"}},
		{"own origin", "PATCH", "/filter", `{"addSignals":["app.bsky.feed.like"]}`,
			[]string{"Authorization", "Bearer " + tok, "Content-Type", "application/json", "Origin", api}},
		{"token-less read, IP host", "GET", "/stats", "", nil},
		{"token-less read, localhost", "GET", "/stats", "", []string{"Host", "localhost" + port}},
		{"token-less read, *.localhost", "GET", "/repos", "", []string{"Host", "cistern.localhost" + port}},
		{"token-less read, own origin", "GET", "/repos", "", []string{"Origin", api}},
		{"a foreign host with the token", "GET", "/repos", "", []string{"Host", "cistern.example", "Authorization", "Bearer " + tok}},
	} {
		if a := send(t, tc.method, api+tc.path, tc.body, tc.headers...); a.Status != http.StatusOK {
			t.Errorf("%s: %d %s", tc.name, a.Status, a.Body)
		}
	}
	if f := ix.Filter().Spec(); len(f.Signals) != 2 {
		t.Fatalf("filter after the patches: %+v", f)
	}

	// Configured hosts and origins.
	api = serve(t, ix, httpapi.Options{AllowedHosts: []string{"cistern.lan"}, AllowedOrigins: []string{"http://dash.lan:8080"}}).URL
	if a := send(t, "GET", api+"/repos", "", "Host", "cistern.lan"+port); a.Status != http.StatusOK {
		t.Errorf("allowed host: %d %s", a.Status, a.Body)
	}
	if a := send(t, "GET", api+"/repos", "", "Origin", "http://dash.lan:8080"); a.Status != http.StatusOK {
		t.Errorf("allowed origin: %d %s", a.Status, a.Body)
	}
	if a := send(t, "GET", api+"/repos", "", "Origin", "http://dash.lan:8081"); a.Status != http.StatusForbidden {
		t.Errorf("another port of an allowed origin: %d %s", a.Status, a.Body)
	}
}
