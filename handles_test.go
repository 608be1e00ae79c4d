package cistern_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/logcheck"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

// hangingHandles is an HTTP transport for the resolver: DID documents come
// from the testnet's PLC directory; handle requests
// (https://{handle}/.well-known/atproto-did) hang until released, then are
// answered from the testnet's accounts, as a slow handle domain would.
type hangingHandles struct {
	net *testnet.Network

	mu      sync.Mutex
	gate    chan struct{}
	waiting int // handle requests waiting at the gate now
	served  int // handle requests answered
}

func newHangingHandles(net *testnet.Network) *hangingHandles {
	return &hangingHandles{net: net, gate: make(chan struct{})}
}

func (h *hangingHandles) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.gate:
	default:
		close(h.gate)
	}
}

func (h *hangingHandles) counts() (waiting, served int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiting, h.served
}

func (h *hangingHandles) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/.well-known/atproto-did" {
		return http.DefaultTransport.RoundTrip(req)
	}
	h.mu.Lock()
	h.waiting++
	gate := h.gate
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.waiting--
		h.mu.Unlock()
	}()
	select {
	case <-gate:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	h.mu.Lock()
	h.served++
	h.mu.Unlock()
	resp := &http.Response{StatusCode: http.StatusNotFound, Body: io.NopCloser(strings.NewReader("")), Request: req}
	if a := h.net.LookupHandle(syntax.Handle(req.URL.Hostname())); a != nil {
		resp.StatusCode, resp.Body = http.StatusOK, io.NopCloser(strings.NewReader(a.DID().String()))
	}
	return resp, nil
}

// TestIdentity_HangingHandleChecksDoNotDelayRecords pins that handle checks
// run beside backfill and live sync: with every handle domain hanging,
// repos are backfilled and follow live commits; once the domains answer,
// each repo's handle is written with an identity event, and a handle change
// announced on the firehose is written with a live one.
func TestIdentity_HangingHandleChecksDoNotDelayRecords(t *testing.T) {
	ctx := context.Background()
	net := testnet.New(t)
	accts, err := net.Generate(ctx, testnet.GenerateOptions{Accounts: 6, Records: 30, Collections: []string{post}})
	if err != nil {
		t.Fatal(err)
	}
	var dids []string
	for _, a := range accts {
		dids = append(dids, a.DID().String())
	}
	hang := newHangingHandles(net)
	t.Cleanup(hang.release)
	cfg := testConfig(t, net, filter.Spec{DIDs: dids})
	cfg.SkipHandleVerification = false
	// The default resolver, with .test handles looked up over HTTPS only
	// (no DNS), and checks that would hang far longer than the test.
	cfg.Resolver = resolver.NewCached(resolver.Options{
		PLCURL:                net.PLCURL(),
		HTTPClient:            &http.Client{Transport: hang},
		SkipDNSDomainSuffixes: []string{".test"},
		HandleTimeout:         10 * time.Minute,
	})
	ix := runConnected(t, net, cfg)

	// Backfill completes while every handle check hangs.
	waitSynced(t, ix, dids...)
	for _, a := range accts {
		if _, err := a.CreateRecord(post, testnet.Post(post, "live")); err != nil {
			t.Fatal(err)
		}
	}
	assertConverged(t, ix, accts...)
	waiting, served := hang.counts()
	if served != 0 || waiting == 0 {
		t.Fatalf("handle requests: %d answered, %d waiting; want none answered and some waiting while records are synced", served, waiting)
	}
	for _, a := range accts {
		if r := mustRepo(t, ix, a.DID().String()); r.Handle != "" {
			t.Errorf("%s: handle %q before its check answered, want none", a.DID(), r.Handle)
		}
	}

	// The domains answer: every handle is written, with an identity event.
	hang.release()
	eventually(t, 30*time.Second, func() string {
		for _, a := range accts {
			if r := mustRepo(t, ix, a.DID().String()); r.Handle != a.Handle().String() {
				return fmt.Sprintf("%s: handle %q, want %q", a.DID(), r.Handle, a.Handle())
			}
		}
		return ""
	})
	eventually(t, 10*time.Second, func() string {
		st, err := ix.Stats(ctx)
		if err != nil {
			return err.Error()
		}
		// A repo may be checked twice (asked at start and by its backfill
		// while the first check ran); the second answers from the cache.
		if hc := st.HandleChecks; hc.Checked < int64(len(accts)) || hc.Changed != int64(len(accts)) {
			return fmt.Sprintf("Stats.HandleChecks = %+v, want %d changed", hc, len(accts))
		}
		return ""
	})
	idents := identityEvents(t, ix)
	for _, a := range accts {
		evs := idents[a.DID().String()]
		if len(evs) != 1 || evs[0].Handle != a.Handle().String() || evs[0].Live {
			t.Errorf("%s: identity events %+v, want one, not live, with handle %s", a.DID(), evs, a.Handle())
		}
	}

	// A handle change on the firehose: the new handle is checked and
	// written with a live identity event.
	moved := accts[0]
	if _, err := moved.SetHandle("moved.test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string {
		if r := mustRepo(t, ix, moved.DID().String()); r.Handle != "moved.test" {
			return fmt.Sprintf("handle %q after #identity, want moved.test", r.Handle)
		}
		return ""
	})
	evs := identityEvents(t, ix)[moved.DID().String()]
	if last := evs[len(evs)-1]; last.Handle != "moved.test" || !last.Live {
		t.Errorf("last identity event %+v, want a live one with handle moved.test", last)
	}
}

// TestIdentity_StaticResolverHandleIsFinal pins that a resolver that does
// not defer handle checks has its handle written by the backfill itself.
func TestIdentity_StaticResolverHandleIsFinal(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "final.test", testnet.Records(post, 5))
	ix := runIndexer(t, testConfig(t, net, filter.Spec{DIDs: []string{a.DID().String()}}))
	waitSynced(t, ix, a.DID().String())
	if r := mustRepo(t, ix, a.DID().String()); r.Handle != "final.test" {
		t.Errorf("handle %q after backfill, want final.test", r.Handle)
	}
}

func mustRepo(t *testing.T, ix *cistern.Indexer, did string) *cistern.Repo {
	t.Helper()
	r, err := ix.Repo(context.Background(), did)
	if err != nil {
		t.Fatalf("Repo(%s): %v", did, err)
	}
	return r
}

// identityEvents returns the identity events of the log, by DID.
func identityEvents(t *testing.T, ix *cistern.Indexer) map[string][]*store.Event {
	t.Helper()
	evs, err := logcheck.Events(context.Background(), ix.Store(), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]*store.Event)
	for _, ev := range evs {
		if ev.Kind == store.KindIdentity {
			out[ev.DID] = append(out[ev.DID], ev)
		}
	}
	return out
}
