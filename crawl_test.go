package cistern_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/testnet"
)

const status = "xyz.statusphere.status"

// crawlConfig is testConfig with the discovery crawler on.
func crawlConfig(t testing.TB, net *testnet.Network, spec filter.Spec) cistern.Config {
	cfg := testConfig(t, net, spec)
	cfg.NoCrawl = false
	return cfg
}

// waitTracked waits until the indexer tracks each of accts.
func waitTracked(t testing.TB, ix *cistern.Indexer, accts ...*testnet.Account) {
	t.Helper()
	eventually(t, 20*time.Second, func() string {
		for _, a := range accts {
			if _, err := ix.Repo(context.Background(), a.DID().String()); err != nil {
				return a.Handle().String() + ": " + err.Error()
			}
		}
		return ""
	})
}

func assertNotTracked(t testing.TB, ix *cistern.Indexer, a *testnet.Account) {
	t.Helper()
	if r, err := ix.Repo(context.Background(), a.DID().String()); err == nil {
		t.Fatalf("%s is tracked (%s, reason %q)", a.Handle(), r.State, r.Reason)
	}
}

func TestCrawl_WildcardSignalFindsReposThatWroteBefore(t *testing.T) {
	net := testnet.New(t)
	follows := net.Account(t, "follows.test", testnet.Records(follow, 2), testnet.Records(post, 3))
	posts := net.Account(t, "posts.test", testnet.Records(post, 3))
	ix := runIndexer(t, crawlConfig(t, net, filter.Spec{Signals: []string{"app.bsky.graph.*"}}))

	waitTracked(t, ix, follows)
	eventually(t, 10*time.Second, func() string {
		if n := net.Host(0).Requests("com.atproto.repo.describeRepo"); n < 2 {
			return "describeRepo not yet asked of both repos"
		}
		return ""
	})
	waitSynced(t, ix, follows.DID().String())
	assertConverged(t, ix, follows)
	assertNotTracked(t, ix, posts)
}

func TestCrawl_WildcardSignalAddedLaterIsCrawled(t *testing.T) {
	net := testnet.New(t)
	follows := net.Account(t, "follows.test", testnet.Records(follow, 2))
	cfg := crawlConfig(t, net, filter.Spec{Signals: []string{status}})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	if _, err := ix.PatchFilter(context.Background(), filter.Patch{AddSignals: []string{"app.bsky.graph.*"}}); err != nil {
		t.Fatal(err)
	}
	waitTracked(t, ix, follows)
}

func TestCrawl_HostWithoutListReposByCollectionFallsBackToDescribeRepo(t *testing.T) {
	net := testnet.New(t)
	withStatus := net.Account(t, "has.test", testnet.Records(status, 2), testnet.Records(post, 3))
	without := net.Account(t, "hasnot.test", testnet.Records(post, 3))
	cfg := crawlConfig(t, net, filter.Spec{Signals: []string{status}})
	cfg.CrawlURL = net.PDSURL()
	ix := runIndexer(t, cfg)

	waitTracked(t, ix, withStatus)
	eventually(t, 10*time.Second, func() string {
		if n := net.Host(0).Requests("com.atproto.repo.describeRepo"); n < 2 {
			return "describeRepo not yet asked of both repos"
		}
		return ""
	})
	waitSynced(t, ix, withStatus.DID().String())
	assertNotTracked(t, ix, without)
	if n := net.Relay().Requests("com.atproto.sync.listReposByCollection"); n != 0 {
		t.Fatalf("the relay was asked listReposByCollection %d times; CrawlURL is the PDS", n)
	}
}

// With no firehose, only the crawler finds repos: a repo that writes a
// signal record while the signal is off is found when the signal is added
// again only if the signal's finished crawl is done again.
func TestCrawl_SignalAddedAgainIsCrawledAgain(t *testing.T) {
	ctx := context.Background()
	net := testnet.New(t)
	first := net.Account(t, "first.test", testnet.Records(status, 1))
	cfg := crawlConfig(t, net, filter.Spec{Signals: []string{status}})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	waitTracked(t, ix, first)
	waitSynced(t, ix, first.DID().String())

	if _, err := ix.PatchFilter(ctx, filter.Patch{RemoveSignals: []string{status}}); err != nil {
		t.Fatal(err)
	}
	later := net.Account(t, "later.test", testnet.Records(status, 1))
	if _, err := ix.PatchFilter(ctx, filter.Patch{AddSignals: []string{status}}); err != nil {
		t.Fatal(err)
	}
	waitTracked(t, ix, later)
	waitSynced(t, ix, later.DID().String())
	assertConverged(t, ix, first, later)
}

func TestCrawl_FullNetworkOnAgainIsCrawledAgain(t *testing.T) {
	ctx := context.Background()
	net := testnet.New(t)
	first := net.Account(t, "first.test", testnet.Records(post, 1))
	cfg := crawlConfig(t, net, filter.Spec{FullNetwork: true})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	waitTracked(t, ix, first)
	waitSynced(t, ix, first.DID().String())

	off, on := false, true
	if _, err := ix.PatchFilter(ctx, filter.Patch{FullNetwork: &off}); err != nil {
		t.Fatal(err)
	}
	later := net.Account(t, "later.test", testnet.Records(post, 1))
	if _, err := ix.PatchFilter(ctx, filter.Patch{FullNetwork: &on}); err != nil {
		t.Fatal(err)
	}
	waitTracked(t, ix, later)
	waitSynced(t, ix, later.DID().String())
	assertConverged(t, ix, first, later)
}

// failingResolver fails to resolve one DID, as a did:web whose host is down
// would, and resolves the others with next.
type failingResolver struct {
	resolver.Resolver
	fail syntax.DID
}

func (r failingResolver) Resolve(ctx context.Context, did syntax.DID) (*resolver.Identity, error) {
	if did == r.fail {
		return nil, errors.New("injected: dial tcp: connection refused")
	}
	return r.Resolver.Resolve(ctx, did)
}

// TestCrawl_WildcardSignalSkipsADIDThatDoesNotResolve: a repo listed before
// the one that holds a wildcard signal, whose DID does not resolve, is
// skipped with a warning; the walk does not stall on it.
func TestCrawl_WildcardSignalSkipsADIDThatDoesNotResolve(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "one.test", testnet.Records(post, 1))
	b := net.Account(t, "two.test", testnet.Records(post, 1))
	bad, good := a, b
	if b.DID() < a.DID() {
		bad, good = b, a
	}
	if _, err := good.CreateRecord(follow, testnet.Post(follow, "x")); err != nil {
		t.Fatal(err)
	}
	cfg := crawlConfig(t, net, filter.Spec{Signals: []string{"app.bsky.graph.*"}})
	cfg.NoFirehose = true
	cfg.Resolver = failingResolver{
		Resolver: resolver.NewCached(resolver.Options{PLCURL: net.PLCURL(), SkipHandleVerification: true}),
		fail:     bad.DID(),
	}
	ix := runIndexer(t, cfg)
	waitTracked(t, ix, good)
}
