package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/testnet"
)

// TestMain lets the smoke test run this test binary as the bench's child
// process (-role scale), as the bench runs itself.
func TestMain(m *testing.M) {
	if os.Getenv("CISTERN_BENCH_CHILD") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseSizes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int64
		wantErr bool
	}{
		{in: "1M,10M,50M", want: []int64{1_000_000, 10_000_000, 50_000_000}},
		{in: "2k, 5K", want: []int64{2_000, 5_000}},
		{in: "1.5M,1G", want: []int64{1_500_000, 1_000_000_000}},
		{in: "300", want: []int64{300}},
		{in: "", wantErr: true},
		{in: "10M,1M", wantErr: true},
		{in: "ten", wantErr: true},
		{in: "-1k", wantErr: true},
	} {
		got, err := parseSizes(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseSizes(%q): err %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("parseSizes(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestBulkDID(t *testing.T) {
	for _, i := range []int{0, 1, 31, 32, 999_999, 1 << 40} {
		did := bulkDID(i)
		if _, err := syntax.ParseDID(did); err != nil || len(did) != len("did:plc:")+24 {
			t.Errorf("bulkDID(%d) = %q: not a did:plc of 24 characters (%v)", i, did, err)
		}
		if got, ok := bulkIndex(did); !ok || got != i {
			t.Errorf("bulkIndex(bulkDID(%d)) = %d, %v", i, got, ok)
		}
	}
	for _, did := range []string{"did:plc:abcdefghijklmnopqrstuvwx", "did:plc:scale", "did:plc:scaleaaaaaaaaaaaaaaaaa1"} {
		if _, ok := bulkIndex(did); ok {
			t.Errorf("bulkIndex(%q) accepted a DID that is not a bulk repo's", did)
		}
	}
}

// The source's CAR for a bulk repo is a complete repo whose commit names
// the repo's DID and verifies with the key the resolver gives.
func TestBulkSource_ServesVerifiableRepos(t *testing.T) {
	net := testnet.New(t)
	accts, err := net.Generate(context.Background(), testnet.GenerateOptions{Accounts: 2, Records: 50})
	if err != nil {
		t.Fatal(err)
	}
	var tmpls []template
	for _, a := range accts {
		tp, err := newTemplate(a)
		if err != nil {
			t.Fatal(err)
		}
		tmpls = append(tmpls, tp)
	}
	src, err := startBulkSource(tmpls, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	res := &bulkResolver{hosts: src.hosts}
	for _, i := range []int{0, 1, 7} {
		did := bulkDID(i)
		id, err := res.Resolve(context.Background(), syntax.DID(did))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(id.PDS + "/xrpc/com.atproto.sync.getRepo?did=" + did)
		if err != nil {
			t.Fatal(err)
		}
		commit, r, err := repo.LoadRepoFromCAR(context.Background(), resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("repo %d: %v", i, err)
		}
		if commit.DID != did {
			t.Errorf("repo %d: commit DID %s, want %s", i, commit.DID, did)
		}
		if err := commit.VerifySignature(id.SigningKey); err != nil {
			t.Errorf("repo %d: signature: %v", i, err)
		}
		n := 0
		if err := r.MST.Walk(func([]byte, cid.Cid) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != 50 {
			t.Errorf("repo %d: %d records, want 50", i, n)
		}
		// Another repo's key does not verify this one.
		other, err := res.Resolve(context.Background(), syntax.DID(bulkDID(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		if commit.VerifySignature(other.SigningKey) == nil {
			t.Errorf("repo %d verifies with repo %d's key", i, i+1)
		}
	}
	resp, err := http.Get(src.hosts[0] + "/xrpc/com.atproto.sync.getRepo?did=did:plc:abcdefghijklmnopqrstuvwx")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("getRepo of an unknown DID: %d, want 400", resp.StatusCode)
	}
}

// A tiny scale run (2k then 5k records) in a child process, as the bench
// runs it: every size is measured, with queries answered and live commits
// arriving during each window.
func TestScale_Smoke(t *testing.T) {
	t.Setenv("CISTERN_BENCH_CHILD", "1")
	dir := t.TempDir()
	out := filepath.Join(dir, "scale.json")
	o := options{Records: 100, Hosts: 2, Verify: "full", Dir: dir, JSON: out}
	s := scaleOptions{Sizes: "2k,5k", Window: 1, QueryRate: 50, LiveRate: 50, LiveRepos: 10, LiveRecords: 10, Templates: 4}
	if err := runScale(o, s); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res ScaleResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 2 || res.Points[0].Size != 2_000 || res.Points[1].Size != 5_000 {
		t.Fatalf("points %+v, want sizes 2k and 5k", res.Points)
	}
	if res.Reached < 5_000 {
		t.Errorf("reached %d records, want ≥ 5000", res.Reached)
	}
	for _, p := range res.Points {
		if p.RecordsPerSec <= 0 || p.BytesPerRecord <= 0 || p.RSS <= 0 || p.DiskBytes <= 0 {
			t.Errorf("size %d: rate %.0f, %.0f B/record, RSS %d, disk %d: want all positive",
				p.Size, p.RecordsPerSec, p.BytesPerRecord, p.RSS, p.DiskBytes)
		}
		if p.Get.N == 0 || p.List.N == 0 || p.Get.Errors > 0 || p.List.Errors > 0 {
			t.Errorf("size %d: getRecord %+v, listRecords %+v: want answered queries and no errors", p.Size, p.Get, p.List)
		}
		if p.Get.P99ms < p.Get.P50ms || p.List.P99ms < p.List.P50ms {
			t.Errorf("size %d: p99 below p50", p.Size)
		}
		if p.LiveCommits == 0 {
			t.Errorf("size %d: no live commits during the window", p.Size)
		}
		if p.Rejected > 0 || p.Errors > 0 {
			t.Errorf("size %d: %d rejected commits, %d repo errors", p.Size, p.Rejected, p.Errors)
		}
	}
}
