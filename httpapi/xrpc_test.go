package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

const (
	posts = "app.bsky.feed.post"
	likes = "app.bsky.feed.like"
)

// richValue is a record value with every atproto data model type that has
// its own JSON form: a link, bytes, nested objects and arrays.
func richValue(t *testing.T) []byte {
	t.Helper()
	m, err := atdata.UnmarshalJSON([]byte(`{
		"$type": "app.bsky.feed.like",
		"subject": {"uri": "at://did:plc:abc/app.bsky.feed.post/3jzfcijpj2z2a", "cid": "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"},
		"blob": {"$type": "blob", "ref": {"$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"}, "mimeType": "image/png", "size": 1234},
		"raw": {"$bytes": "AAECAwQFBgc"},
		"list": [1, -2, "three", true, null, {"n": 4}],
		"createdAt": "2024-01-02T03:04:05.678Z"
	}`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := testnet.Value(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// setup starts a network with alice (posts and likes) and bob (posts),
// an indexer tracking both, and the API over it.
func setup(t *testing.T, opts httpapi.Options) (*testnet.Network, *cistern.Indexer, string, *testnet.Account, *testnet.Account) {
	t.Helper()
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 123), testnet.Records(likes, 4))
	if _, err := alice.PutRecord(likes, "self", richValue(t)); err != nil {
		t.Fatal(err)
	}
	bob := net.Account(t, "bob.test", testnet.Records(posts, 5))
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{alice.DID().String(), bob.DID().String()}})
	waitSynced(t, ix, alice.DID().String(), bob.DID().String())
	srv := serve(t, ix, opts)
	return net, ix, srv.URL, alice, bob
}

// same asks the PDS and cistern the same XRPC query and requires the same
// status and the same JSON (after normalisation); it returns cistern's.
func same(t *testing.T, pds, ours, method string, kv ...string) answer {
	t.Helper()
	want := xrpc(t, pds, method, kv...)
	got := xrpc(t, ours, method, kv...)
	if got.Status != want.Status {
		t.Fatalf("%s %v: status %d, PDS answers %d\nours: %s\nPDS:  %s", method, kv, got.Status, want.Status, got.Body, want.Body)
	}
	if want.Status != http.StatusOK {
		if got.errName() != want.errName() {
			t.Fatalf("%s %v: error %q, PDS answers %q", method, kv, got.errName(), want.errName())
		}
		return got
	}
	if g, w := got.normalized(t), want.normalized(t); g != w {
		t.Fatalf("%s %v: answers differ\nours: %s\nPDS:  %s", method, kv, g, w)
	}
	return got
}

func TestGetRecord_MatchesPDS(t *testing.T) {
	net, _, api, alice, bob := setup(t, httpapi.Options{})
	pds := net.PDSURL()
	n := 0
	for _, acct := range []*testnet.Account{alice, bob} {
		for _, rec := range acct.Records() {
			for _, repo := range []string{acct.DID().String(), acct.Handle().String()} {
				same(t, pds, api, "com.atproto.repo.getRecord", "repo", repo, "collection", rec.Collection, "rkey", rec.RKey)
				n++
			}
		}
	}
	if n < 2*(123+4+1+5) {
		t.Fatalf("compared %d answers, want every record by DID and handle", n)
	}
	rec, _ := alice.Record(likes, "self")
	got := same(t, pds, api, "com.atproto.repo.getRecord", "repo", alice.DID().String(), "collection", likes, "rkey", "self", "cid", rec.CID.String())
	var out struct{ URI, CID string }
	got.decode(t, &out)
	if out.URI != "at://"+alice.DID().String()+"/"+likes+"/self" || out.CID != rec.CID.String() {
		t.Fatalf("getRecord self: uri %q cid %q", out.URI, out.CID)
	}
	// A cid that is not the record's: RecordNotFound, like the PDS.
	other := alice.Records()[0].CID.String()
	same(t, pds, api, "com.atproto.repo.getRecord", "repo", alice.DID().String(), "collection", likes, "rkey", "self", "cid", other)
	// Absent record and absent collection.
	a := same(t, pds, api, "com.atproto.repo.getRecord", "repo", alice.DID().String(), "collection", posts, "rkey", "3zzzzzzzzzzzz")
	if a.Status != http.StatusBadRequest || a.errName() != "RecordNotFound" {
		t.Fatalf("absent record: %d %s", a.Status, a.Body)
	}
	same(t, pds, api, "com.atproto.repo.getRecord", "repo", bob.DID().String(), "collection", likes, "rkey", "self")
}

func TestListRecords_MatchesPDSPages(t *testing.T) {
	net, _, api, alice, bob := setup(t, httpapi.Options{})
	pds := net.PDSURL()
	for _, tc := range []struct {
		repo, coll, limit, reverse string
	}{
		{alice.DID().String(), posts, "", ""},
		{alice.DID().String(), posts, "1", ""},
		{alice.DID().String(), posts, "7", "true"},
		{alice.DID().String(), posts, "50", "false"},
		{alice.DID().String(), posts, "100", "true"},
		{alice.Handle().String(), likes, "2", ""},
		{alice.DID().String(), likes, "", "true"},
		{bob.DID().String(), posts, "5", ""},
		{bob.DID().String(), likes, "", ""},
	} {
		t.Run(tc.coll+"/limit="+tc.limit+"/reverse="+tc.reverse, func(t *testing.T) {
			cursor, pages, records := "", 0, 0
			for {
				kv := []string{"repo", tc.repo, "collection", tc.coll}
				if tc.limit != "" {
					kv = append(kv, "limit", tc.limit)
				}
				if tc.reverse != "" {
					kv = append(kv, "reverse", tc.reverse)
				}
				if cursor != "" {
					kv = append(kv, "cursor", cursor)
				}
				var page struct {
					Cursor  string
					Records []struct{ URI string }
				}
				same(t, pds, api, "com.atproto.repo.listRecords", kv...).decode(t, &page)
				pages++
				records += len(page.Records)
				if page.Cursor == "" || len(page.Records) == 0 {
					break
				}
				cursor = page.Cursor
				if pages > 200 {
					t.Fatal("pagination does not end")
				}
			}
			want := 0
			for _, r := range map[string]*testnet.Account{alice.DID().String(): alice, alice.Handle().String(): alice, bob.DID().String(): bob}[tc.repo].Records() {
				if r.Collection == tc.coll {
					want++
				}
			}
			if records != want {
				t.Fatalf("paged through %d records in %d pages, the repo has %d", records, pages, want)
			}
		})
	}
	// A cursor taken from the middle, both directions.
	recs := alice.Records()
	mid := recs[60].RKey
	same(t, pds, api, "com.atproto.repo.listRecords", "repo", alice.DID().String(), "collection", posts, "cursor", mid, "limit", "10")
	same(t, pds, api, "com.atproto.repo.listRecords", "repo", alice.DID().String(), "collection", posts, "cursor", mid, "limit", "10", "reverse", "true")
}

func TestXRPC_BadParameters(t *testing.T) {
	net, _, api, alice, _ := setup(t, httpapi.Options{})
	pds := net.PDSURL()
	did := alice.DID().String()
	// Each is compared with the PDS: same status and error name; where
	// want is set, the error name and message must be those of the
	// reference PDS.
	unknown := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	for _, tc := range []struct {
		name   string
		method string
		kv     []string
		want   *httpapi.Error
	}{
		{"getRecord no repo", "com.atproto.repo.getRecord", []string{"collection", posts, "rkey", "self"}, nil},
		{"getRecord bad repo", "com.atproto.repo.getRecord", []string{"repo", "not a did", "collection", posts, "rkey", "self"}, nil},
		{"getRecord unknown DID", "com.atproto.repo.getRecord", []string{"repo", unknown, "collection", posts, "rkey", "self"},
			&httpapi.Error{Name: "InvalidRequest", Message: "Could not locate record"}},
		{"getRecord unknown handle", "com.atproto.repo.getRecord", []string{"repo", "nobody.test", "collection", posts, "rkey", "self"},
			&httpapi.Error{Name: "InvalidRequest", Message: "Could not locate record"}},
		{"getRecord bad collection", "com.atproto.repo.getRecord", []string{"repo", did, "collection", "posts", "rkey", "self"}, nil},
		{"getRecord no rkey", "com.atproto.repo.getRecord", []string{"repo", did, "collection", posts}, nil},
		{"getRecord bad rkey", "com.atproto.repo.getRecord", []string{"repo", did, "collection", posts, "rkey", "a/b"}, nil},
		{"getRecord bad cid", "com.atproto.repo.getRecord", []string{"repo", did, "collection", likes, "rkey", "self", "cid", "nope"}, nil},
		{"listRecords no collection", "com.atproto.repo.listRecords", []string{"repo", did}, nil},
		{"listRecords limit 0", "com.atproto.repo.listRecords", []string{"repo", did, "collection", posts, "limit", "0"}, nil},
		{"listRecords limit 101", "com.atproto.repo.listRecords", []string{"repo", did, "collection", posts, "limit", "101"}, nil},
		{"listRecords limit abc", "com.atproto.repo.listRecords", []string{"repo", did, "collection", posts, "limit", "abc"}, nil},
		{"listRecords reverse maybe", "com.atproto.repo.listRecords", []string{"repo", did, "collection", posts, "reverse", "maybe"}, nil},
		{"listRecords unknown repo", "com.atproto.repo.listRecords", []string{"repo", unknown, "collection", posts},
			&httpapi.Error{Name: "InvalidRequest", Message: "Could not find repo: " + unknown}},
		{"listRecords unknown handle", "com.atproto.repo.listRecords", []string{"repo", "nobody.test", "collection", posts},
			&httpapi.Error{Name: "InvalidRequest", Message: "Could not find repo: nobody.test"}},
		{"describeRepo no repo", "com.atproto.repo.describeRepo", nil, nil},
		{"describeRepo unknown repo", "com.atproto.repo.describeRepo", []string{"repo", "did:web:nowhere.example"},
			&httpapi.Error{Name: "RepoNotFound", Message: "Could not find repo for DID: did:web:nowhere.example"}},
		{"getRepoStatus bad did", "com.atproto.sync.getRepoStatus", []string{"did", "alice.test"}, nil},
		{"getRepoStatus unknown did", "com.atproto.sync.getRepoStatus", []string{"did", unknown},
			&httpapi.Error{Name: "RepoNotFound", Message: "Could not find repo for DID: " + unknown}},
		{"getLatestCommit no did", "com.atproto.sync.getLatestCommit", nil, nil},
		{"listRepos limit 0", "com.atproto.sync.listRepos", []string{"limit", "0"}, nil},
		{"listRepos limit 1001", "com.atproto.sync.listRepos", []string{"limit", "1001"}, nil},
		{"unknown method", "com.atproto.repo.uploadBlob", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := same(t, pds, api, tc.method, tc.kv...)
			if a.Status == http.StatusOK {
				t.Fatalf("bad request answered 200: %s", a.Body)
			}
			var e httpapi.Error
			a.decode(t, &e)
			if e.Name == "" || e.Message == "" {
				t.Fatalf("error body %s lacks error or message", a.Body)
			}
			if tc.want != nil && e != *tc.want {
				t.Fatalf("error %+v, want the reference PDS's %+v", e, *tc.want)
			}
		})
	}
	// Our own methods and what the PDS does not check.
	for _, tc := range []struct {
		method string
		kv     []string
		status int
		name   string
	}{
		{"dev.cistern.countRecords", nil, 400, "InvalidRequest"},
		{"dev.cistern.countRecords", []string{"repo", did, "collection", "x"}, 400, "InvalidRequest"},
		{"dev.cistern.countRecords", []string{"repo", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, 400, "RepoNotFound"},
		{"dev.cistern.listCollection", nil, 400, "InvalidRequest"},
		{"dev.cistern.listCollection", []string{"collection", posts, "cursor", "x"}, 400, "InvalidRequest"},
		{"dev.cistern.listCollection", []string{"collection", posts, "limit", "1000"}, 400, "InvalidRequest"},
		{"dev.cistern.getRepoInfo", []string{"repo", "!"}, 400, "InvalidRequest"},
		{"dev.cistern.getRepoInfo", []string{"repo", "nobody.test"}, 400, "RepoNotFound"},
		{"com.atproto.repo.listRecords", []string{"repo", did, "collection", posts, "cursor", "a/b"}, 400, "InvalidRequest"},
		{"com.atproto.repo.listRecords", []string{"repo", did, "repo", did, "collection", posts}, 400, "InvalidRequest"},
		{"com.atproto.sync.listRepos", []string{"cursor", "zzz"}, 400, "InvalidRequest"},
	} {
		a := xrpc(t, api, tc.method, tc.kv...)
		if a.Status != tc.status || a.errName() != tc.name {
			t.Errorf("%s %v: %d %s, want %d %s", tc.method, tc.kv, a.Status, a.Body, tc.status, tc.name)
		}
	}
	if a := do(t, http.MethodPost, api+"/xrpc/com.atproto.repo.getRecord", "", []byte("{}")); a.Status != http.StatusMethodNotAllowed {
		t.Errorf("POST to a query: %d %s", a.Status, a.Body)
	}
}

func TestRepoMethods(t *testing.T) {
	net, _, api, alice, bob := setup(t, httpapi.Options{})
	pds := net.PDSURL()
	did := alice.DID().String()

	var desc struct {
		Handle          string
		DID             string
		Collections     []string
		HandleIsCorrect bool
		DIDDoc          map[string]any `json:"didDoc"`
	}
	xrpc(t, api, "com.atproto.repo.describeRepo", "repo", "alice.test").decode(t, &desc)
	if desc.DID != did || desc.Handle != "alice.test" || !desc.HandleIsCorrect || desc.DIDDoc["id"] != did {
		t.Fatalf("describeRepo: %+v", desc)
	}
	if len(desc.Collections) != 2 || desc.Collections[0] != likes || desc.Collections[1] != posts {
		t.Fatalf("describeRepo collections %v", desc.Collections)
	}
	// The DID document says what the PLC directory says.
	wantDoc := alice.DIDDocument()
	gotDoc, _ := json.Marshal(desc.DIDDoc)
	for _, want := range []string{"at://alice.test", wantDoc.Service[0].ServiceEndpoint, wantDoc.VerificationMethod[0].PublicKeyMultibase} {
		if !strings.Contains(string(gotDoc), want) {
			t.Fatalf("describeRepo didDoc %s lacks %s", gotDoc, want)
		}
	}

	same(t, pds, api, "com.atproto.sync.getRepoStatus", "did", did)

	var lc struct{ CID, Rev, Data string }
	xrpc(t, api, "com.atproto.sync.getLatestCommit", "did", did).decode(t, &lc)
	if lc.CID != alice.CommitCID().String() || lc.Rev != alice.Rev() || lc.Data != alice.DataCID().String() {
		t.Fatalf("getLatestCommit %+v, want rev %s data %s", lc, alice.Rev(), alice.DataCID())
	}

	var repos struct {
		Cursor string
		Repos  []struct {
			DID, Rev string
			Active   bool
		}
	}
	xrpc(t, api, "com.atproto.sync.listRepos", "limit", "1").decode(t, &repos)
	if len(repos.Repos) != 1 || repos.Cursor == "" {
		t.Fatalf("listRepos limit 1: %+v", repos)
	}
	first := repos.Repos[0].DID
	cursor := repos.Cursor
	repos.Cursor, repos.Repos = "", nil
	xrpc(t, api, "com.atproto.sync.listRepos", "cursor", cursor).decode(t, &repos)
	if len(repos.Repos) != 1 || repos.Repos[0].DID == first || repos.Cursor != "" || !repos.Repos[0].Active {
		t.Fatalf("listRepos second page: %+v", repos)
	}

	var count struct{ Count int64 }
	xrpc(t, api, "dev.cistern.countRecords", "repo", did).decode(t, &count)
	if count.Count != 123+5 {
		t.Fatalf("countRecords all: %d", count.Count)
	}
	xrpc(t, api, "dev.cistern.countRecords", "repo", "alice.test", "collection", likes).decode(t, &count)
	if count.Count != 5 {
		t.Fatalf("countRecords likes: %d", count.Count)
	}

	var info httpapi.RepoInfo
	xrpc(t, api, "dev.cistern.getRepoInfo", "repo", "bob.test").decode(t, &info)
	if info.DID != bob.DID().String() || info.State != "synced" || info.Rev != bob.Rev() || info.Handle != "bob.test" ||
		info.PDS != net.PDSURL() || info.Records != 5 || info.Collections[posts] != 5 || info.LastError != nil {
		t.Fatalf("getRepoInfo: %+v", info)
	}

	var pages int
	// listCollection: every post of both repos once, newest indexed first.
	seen := map[string]bool{}
	cursor, pages = "", 0
	for {
		kv := []string{"collection", posts, "limit", "40"}
		if cursor != "" {
			kv = append(kv, "cursor", cursor)
		}
		var page struct {
			Cursor  string
			Records []struct{ URI, CID string }
		}
		a := xrpc(t, api, "dev.cistern.listCollection", kv...)
		if a.Status != http.StatusOK {
			t.Fatalf("listCollection: %d %s", a.Status, a.Body)
		}
		a.decode(t, &page)
		pages++
		for _, r := range page.Records {
			if seen[r.URI] {
				t.Fatalf("listCollection repeats %s", r.URI)
			}
			seen[r.URI] = true
		}
		if page.Cursor == "" {
			break
		}
		if _, err := strconv.ParseUint(page.Cursor, 10, 64); err != nil {
			t.Fatalf("cursor %q", page.Cursor)
		}
		cursor = page.Cursor
	}
	if len(seen) != 128 || pages != 4 {
		t.Fatalf("listCollection: %d records in %d pages, want 128 in 4", len(seen), pages)
	}

	// A new record is listed first.
	rec, err := bob.CreateRecord(posts, testnet.Post(posts, "newest"))
	if err != nil {
		t.Fatal(err)
	}
	uri := "at://" + bob.DID().String() + "/" + posts + "/" + rec.RKey
	waitFor(t, "the new post to be indexed", func() bool {
		var page struct{ Records []struct{ URI string } }
		xrpc(t, api, "dev.cistern.listCollection", "collection", posts, "limit", "1").decode(t, &page)
		return len(page.Records) == 1 && page.Records[0].URI == uri
	})
	same(t, pds, api, "com.atproto.repo.getRecord", "repo", "bob.test", "collection", posts, "rkey", rec.RKey)
}

// An account that is deactivated, taken down, suspended or deleted answers
// as the reference PDS does: getRecord and listRecords do not find its repo
// (400 InvalidRequest, "Could not locate record" and "Could not find repo:
// <repo>"), while getLatestCommit, describeRepo and getRepoStatus name the
// account's status.
func TestXRPC_InactiveAccounts(t *testing.T) {
	net, ix, api, alice, bob := setup(t, httpapi.Options{})
	pds := net.PDSURL()
	rec := alice.Records()[0]
	waitState := func(did, state string) {
		t.Helper()
		waitFor(t, did+" "+state, func() bool {
			r, err := ix.Repo(context.Background(), did)
			return err == nil && r.State.String() == state
		})
	}
	// notFound asks getRecord and listRecords of repo (a DID or handle),
	// here and at the PDS.
	notFound := func(when, repo string) {
		t.Helper()
		for _, c := range []struct{ method, msg string }{
			{"com.atproto.repo.getRecord", "Could not locate record"},
			{"com.atproto.repo.listRecords", "Could not find repo: " + repo},
		} {
			a := same(t, pds, api, c.method, "repo", repo, "collection", rec.Collection, "rkey", rec.RKey)
			if a.Status != http.StatusBadRequest || a.errName() != "InvalidRequest" || a.errMessage() != c.msg {
				t.Errorf("%s: %s %s: %d %s, want 400 InvalidRequest %q", when, c.method, repo, a.Status, a.Body, c.msg)
			}
		}
	}
	did := alice.DID().String()
	for _, c := range []struct {
		change func() (int64, error)
		state  string
		status string // the error of getLatestCommit and describeRepo
	}{
		{alice.Deactivate, "deactivated", "RepoDeactivated"},
		{alice.Takedown, "takendown", "RepoTakendown"},
		{alice.Suspend, "suspended", "RepoSuspended"},
	} {
		if _, err := c.change(); err != nil {
			t.Fatal(err)
		}
		waitState(did, c.state)
		notFound(c.state, did)
		notFound(c.state, alice.Handle().String())
		a := same(t, pds, api, "com.atproto.sync.getLatestCommit", "did", did)
		if a.errName() != c.status {
			t.Errorf("%s: getLatestCommit: %d %s, want %s", c.state, a.Status, a.Body, c.status)
		}
		a = xrpc(t, api, "com.atproto.repo.describeRepo", "repo", did)
		if a.Status != http.StatusBadRequest || a.errName() != c.status {
			t.Errorf("%s: describeRepo: %d %s, want %s", c.state, a.Status, a.Body, c.status)
		}
		// getRepoStatus of the inactive account: active false, status.
		same(t, pds, api, "com.atproto.sync.getRepoStatus", "did", did)
		if _, err := alice.Activate(); err != nil {
			t.Fatal(err)
		}
		waitState(did, "synced")
		same(t, pds, api, "com.atproto.repo.getRecord", "repo", did, "collection", rec.Collection, "rkey", rec.RKey)
	}

	if _, err := bob.Delete(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's deletion", func() bool {
		b, err := ix.Repo(context.Background(), bob.DID().String())
		return err != nil || b.State.String() == "deleted"
	})
	notFound("deleted", bob.DID().String())
	a := same(t, pds, api, "com.atproto.sync.getRepoStatus", "did", bob.DID().String())
	if a.errName() != "RepoNotFound" {
		t.Errorf("getRepoStatus of a deleted account: %d %s, want RepoNotFound", a.Status, a.Body)
	}
}
