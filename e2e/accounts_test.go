package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
)

// Scenario 3: a handle change, deactivate and activate, a takedown and its
// reversal, an account deletion. While the PDS does not serve alice's repo
// (and for a repo it never had), cistern's HTTP side must answer the XRPC
// queries about it as the PDS does.
func TestAccounts_IdentityAndStatus(t *testing.T) {
	n := refnet(t)
	const coll = "dev.cistern.eacct.post"
	alice := n.createAccount(t, "alice")
	bob := n.createAccount(t, "bob") // untouched bystander

	var kept writeResult // a record of alice's, asked for once she is gone
	for range 4 {
		kept = n.create(t, alice.DID, coll, "alice")
		n.create(t, bob.DID, coll, "bob")
	}
	spec := filter.Spec{DIDs: []string{alice.DID, bob.DID}}
	filt := mustFilter(t, spec)
	ix := startIndexer(t, indexerConfig(t, n, dbPath(t), spec))
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)
	r := lib{ix.Indexer}
	api := serveAPI(t, ix.Indexer)
	check := func(step string) *fold {
		t.Helper()
		t.Logf("step: %s", step)
		return assertConverged(t, n, r, filt, alice.DID, bob.DID)
	}
	check("synced")
	// sameErrors: cistern's HTTP side answers the XRPC queries about a
	// repo that the PDS does not serve as the PDS does.
	sameErrors := func(step, repo string) {
		t.Helper()
		assertSameRepoErrors(t, step, n, api, repo, coll, rkeyOf(kept.URI))
	}
	sameErrors("unknown DID", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
	sameErrors("unknown handle", "nobody-here.test")

	// Handle change: an #identity event; cistern re-resolves.
	newHandle := newHandle("alicenew")
	n.must(t, "/handle", map[string]any{"did": alice.DID, "handle": newHandle}, nil)
	f := check("handle changed")
	if h := f.handles[alice.DID]; h != newHandle {
		t.Errorf("last identity event of alice says %q, want %q", h, newHandle)
	}

	// Deactivate, then activate; the repo is synced again afterwards and
	// follows new writes.
	n.must(t, "/deactivate", map[string]any{"did": alice.DID}, nil)
	check("deactivated")
	sameErrors("deactivated", alice.DID)
	sameErrors("deactivated, by handle", newHandle)
	n.must(t, "/activate", map[string]any{"did": alice.DID}, nil)
	check("activated")
	n.create(t, alice.DID, coll, "after activation")
	check("written after activation")

	// Takedown and its reversal.
	n.must(t, "/takedown", map[string]any{"did": alice.DID}, nil)
	check("taken down")
	sameErrors("taken down", alice.DID)
	sameErrors("taken down, by handle", newHandle)
	n.must(t, "/takedown", map[string]any{"did": alice.DID, "applied": false}, nil)
	check("takedown reversed")
	n.create(t, alice.DID, coll, "after reversal")
	check("written after reversal")

	// Account deletion: records removed, each with a delete event.
	before := len(f.recordsOf(alice.DID))
	n.must(t, "/delete-account", map[string]any{"did": alice.DID}, nil)
	f = check("deleted")
	sameErrors("deleted", alice.DID)
	if before == 0 {
		t.Fatal("alice had no records before deletion; the check proves nothing")
	}
	rv, err := r.repo(context.Background(), alice.DID)
	if err != nil {
		t.Fatal(err)
	}
	if rv == nil || rv.State != "deleted" {
		t.Errorf("alice after account deletion: %+v, want state deleted", rv)
	}
	if ev := f.accounts[alice.DID]; ev == nil || ev.Active {
		t.Errorf("last account event of alice: %v, want an inactive one", ev)
	}
	if got := len(f.recordsOf(bob.DID)); got != 4 {
		t.Errorf("bystander bob folds to %d records, want 4", got)
	}
}

// assertSameRepoErrors asks cistern's HTTP side (api) and the PDS the XRPC
// queries about one repo that the PDS does not serve (unknown, deactivated,
// taken down or deleted): getRecord of rkey in coll and listRecords of
// coll by repo (a DID or handle), and for a DID describeRepo,
// getLatestCommit and getRepoStatus. getRecord and listRecords must be
// errors; every answer must have the PDS's status and error name, and
// getRecord's and listRecords' the PDS's message.
//
// One answer is translated first. A PDS that does not find the repo of a
// getRecord forwards the query to its app view when it has one, and
// refnet's PDS has one (dev-env configures https://appview.invalid), so it
// answers 502 UpstreamFailure. That answer says the PDS did not find the
// repo; cistern, which has no app view, must answer what the PDS answers
// then without one: 400 InvalidRequest "Could not locate record"
// (@atproto/pds api/com/atproto/repo/getRecord.js).
func assertSameRepoErrors(t *testing.T, step string, n *network, api server, repo, coll, rkey string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pds := newXRPC(n.PDS)
	type query struct {
		method   string
		q        url.Values
		mustFail bool // the PDS must answer an error, with a message to match
	}
	qs := []query{
		{"com.atproto.repo.getRecord", url.Values{"repo": {repo}, "collection": {coll}, "rkey": {rkey}}, true},
		{"com.atproto.repo.listRecords", url.Values{"repo": {repo}, "collection": {coll}}, true},
	}
	if strings.HasPrefix(repo, "did:") {
		qs = append(qs,
			query{"com.atproto.repo.describeRepo", url.Values{"repo": {repo}}, false},
			query{"com.atproto.sync.getLatestCommit", url.Values{"did": {repo}}, false},
			query{"com.atproto.sync.getRepoStatus", url.Values{"did": {repo}}, false})
	}
	for _, q := range qs {
		want, err := pds.ask(ctx, q.method, q.q)
		if err != nil {
			t.Fatalf("%s: PDS %s: %v", step, q.method, err)
		}
		got, err := api.x.ask(ctx, q.method, q.q)
		if err != nil {
			t.Fatalf("%s: cistern %s: %v", step, q.method, err)
		}
		pdsSays := want.String()
		if q.method == "com.atproto.repo.getRecord" && want.Status == http.StatusBadGateway && want.Name == "UpstreamFailure" {
			want = answer{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "Could not locate record"}
			pdsSays = fmt.Sprintf("%s (forwarded to its app view; without one: %s)", pdsSays, want)
		}
		t.Logf("%s: %s %s: PDS %s", step, q.method, q.q.Encode(), pdsSays)
		switch {
		case q.mustFail && want.Status == http.StatusOK:
			t.Errorf("%s: PDS %s %s answers %s; the comparison needs a repo it does not serve", step, q.method, q.q.Encode(), pdsSays)
		case got.Status != want.Status || got.Name != want.Name,
			q.mustFail && got.Message != want.Message,
			want.Status == http.StatusOK && !sameJSON(got.Body, want.Body):
			t.Errorf("%s: %s %s: cistern answers %s, PDS %s", step, q.method, q.q.Encode(), got, pdsSays)
		}
	}
}
