package backfill_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// hostOf returns the host[:port] of a testnet host.
func hostOf(t *testing.T, h *testnet.Host) string {
	t.Helper()
	u, err := url.Parse(h.URL())
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func hostStats(s *backfill.Scheduler, host string) (backfill.HostStats, bool) {
	for _, h := range s.Hosts() {
		if h.Host == host {
			return h, true
		}
	}
	return backfill.HostStats{}, false
}

func TestHosts_FailingHostAndItsRepos(t *testing.T) {
	net := testnet.New(t, testnet.WithHosts(3))
	bad := net.Host(0)
	var badRepos []*testnet.Account
	for i := range 2 {
		badRepos = append(badRepos, must(bad.CreateAccount(fmt.Sprintf("bad%d.test", i), testnet.Records(collPost, 5))))
	}
	good := must(net.Host(1).CreateAccount("good.test", testnet.Records(collPost, 20)))
	limited := must(net.Host(2).CreateAccount("limited.test", testnet.Records(collPost, 5)))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	s := e.scheduler(nil)

	bad.FailNext("com.atproto.sync.getRepo", 2, 503)
	for _, a := range badRepos {
		if err := s.Backfill(e.ctx, a.DID().String()); err == nil {
			t.Fatalf("%s: backfill succeeded against a failing host", a.Handle())
		}
	}
	if err := s.Backfill(e.ctx, good.DID().String()); err != nil {
		t.Fatal(err)
	}
	net.Host(2).RateLimitNext("com.atproto.sync.getRepo", 1, 30*time.Second)
	if err := s.Backfill(e.ctx, limited.DID().String()); err == nil {
		t.Fatal("backfill succeeded against a rate-limited host")
	}

	b, ok := hostStats(s, hostOf(t, bad))
	if !ok || b.Failing != 2 || b.Failures != 2 || b.Completed != 0 || b.LastError == nil {
		t.Fatalf("failing host: %+v (found %v), want 2 failing repos and a last error", b, ok)
	}
	if b.LastError.Kind != backfill.KindHTTP || !strings.Contains(b.LastError.Message, "503") || b.LastError.DID != badRepos[1].DID().String() {
		t.Fatalf("last error %+v, want the second repo's HTTP 503", b.LastError)
	}
	g, ok := hostStats(s, hostOf(t, net.Host(1)))
	if !ok || g.Completed != 1 || g.Failing != 0 || g.Bytes == 0 || g.LastError != nil {
		t.Fatalf("good host: %+v (found %v), want 1 completed with bytes", g, ok)
	}
	l, ok := hostStats(s, hostOf(t, net.Host(2)))
	if !ok || l.RateLimits != 1 || l.Failing != 0 || l.RateLimitedUntil.Before(time.Now().Add(25*time.Second)) {
		t.Fatalf("rate-limited host: %+v (found %v), want paused about 30s, not failing", l, ok)
	}

	recent := s.RecentFailures()
	if len(recent) != 2 || recent[0].DID != badRepos[1].DID().String() || recent[1].DID != badRepos[0].DID().String() {
		t.Fatalf("recent failures %+v, want the two failing repos, newest first", recent)
	}

	// The host answers again: its repos succeed and stop counting as failing.
	for _, a := range badRepos {
		if err := s.Backfill(e.ctx, a.DID().String()); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := hostStats(s, hostOf(t, bad)); b.Failing != 0 || b.Completed != 2 || b.Failures != 2 {
		t.Fatalf("recovered host: %+v, want 0 failing, 2 completed, 2 failures counted", b)
	}
}

func TestRecentFailures_KeepsTheLast32(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(collPost, 3))
	e := newEnv(t, net, filter.Spec{FullNetwork: true})
	s := e.scheduler(nil)
	alice.Host().FailNext("com.atproto.sync.getRepo", 40, 500)
	for range 40 {
		if err := s.Backfill(e.ctx, alice.DID().String()); err == nil {
			t.Fatal("backfill succeeded against a failing host")
		}
	}
	recent := s.RecentFailures()
	if len(recent) != 32 {
		t.Fatalf("%d recent failures, want 32", len(recent))
	}
	for i := 1; i < len(recent); i++ {
		if recent[i].At.After(recent[i-1].At) {
			t.Fatalf("recent failures not newest first at %d: %v after %v", i, recent[i].At, recent[i-1].At)
		}
	}
	if h, _ := hostStats(s, hostOf(t, alice.Host())); h.Failing != 1 || h.Failures != 40 {
		t.Fatalf("host %+v, want 1 failing repo and 40 failures", h)
	}
}
