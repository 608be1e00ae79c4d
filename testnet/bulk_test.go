package testnet

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
)

func TestBuildMSTMatchesIndigo(t *testing.T) {
	for _, size := range []int{0, 1, 2, 15, 16, 100, 1000, 3000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			m := map[string]cid.Cid{}
			var items []mstItem
			for i := 0; i < size; i++ {
				k := fmt.Sprintf("com.example.record/%08d", i*7919%100003)
				c := cborCID([]byte(k))
				m[k] = c
				items = append(items, mstItem{key: []byte(k), val: c, height: mst.HeightForKey([]byte(k))})
			}
			sortItems(items)
			tree, err := mst.LoadTreeFromMap(m)
			mustNoErr(t, err)
			want, err := tree.RootCID()
			mustNoErr(t, err)
			got, err := buildMST(newBlockMap(0), items)
			mustNoErr(t, err)
			if got != *want {
				t.Fatalf("root %s, indigo %s", got, want)
			}
		})
	}
}

func sortItems(items []mstItem) {
	for i := 1; i < len(items); i++ {
		for j := i; j > 0 && bytes.Compare(items[j].key, items[j-1].key) < 0; j-- {
			items[j], items[j-1] = items[j-1], items[j]
		}
	}
}

func TestGenerateServesVerifiableReposAndAcceptsWrites(t *testing.T) {
	n := New(t, WithHosts(2))
	accts, err := n.Generate(context.Background(), GenerateOptions{Accounts: 6, Records: 300, Collections: []string{"app.bsky.feed.post", "app.bsky.feed.like"}})
	mustNoErr(t, err)
	if len(n.Accounts()) != 6 || accts[1].Host() != n.Host(1) {
		t.Fatal("accounts not registered or not spread over hosts")
	}
	if n.Relay().Seq() != 0 {
		t.Fatalf("generation emitted %d frames", n.Relay().Seq())
	}
	for _, a := range accts {
		code, _, car := get(t, a.Host().URL()+"/xrpc/com.atproto.sync.getRepo?did="+a.DID().String())
		if code != 200 {
			t.Fatalf("getRepo %d", code)
		}
		commit, r, err := repo.LoadRepoFromCAR(context.Background(), bytes.NewReader(car))
		mustNoErr(t, err)
		mustNoErr(t, commit.VerifySignature(a.PublicKey()))
		mustNoErr(t, r.MST.Verify())
		count := 0
		mustNoErr(t, r.MST.Walk(func([]byte, cid.Cid) error { count++; return nil }))
		if count != 300 || len(a.Records()) != 300 || a.Collections()[1] != "app.bsky.feed.post" {
			t.Fatalf("records %d/%d, collections %v", count, len(a.Records()), a.Collections())
		}
	}
	// A generated repo takes writes like any other, with a verifiable frame.
	c := subscribe(t, n, -1)
	a := accts[0]
	recs := a.Records()
	cm, err := a.Apply(Delete(recs[0].Collection, recs[0].RKey), Create("app.bsky.feed.post", "", Post("app.bsky.feed.post", "x")))
	mustNoErr(t, err)
	f := readFrame(t, c)
	if f.Seq != cm.Seq {
		t.Fatalf("seq %d", f.Seq)
	}
	verifyCommitFrame(t, a, cm.Frame)
}

func BenchmarkGenerate(b *testing.B) {
	for _, records := range []int{100, 1000} {
		b.Run(fmt.Sprintf("records=%d", records), func(b *testing.B) {
			n := New(b)
			b.ResetTimer()
			_, err := n.Generate(context.Background(), GenerateOptions{Accounts: b.N, Records: records})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/s, "repos/s")
			b.ReportMetric(float64(b.N*records)/s, "records/s")
		})
	}
}
