package testnet

import (
	"context"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
)

func TestLoadWritesVerifiableCommitsUntilStopped(t *testing.T) {
	n := New(t)
	_, err := n.Generate(context.Background(), GenerateOptions{Accounts: 4, Records: 50})
	mustNoErr(t, err)
	c := subscribe(t, n, -1)
	l := n.StartLoad(LoadOptions{Rate: 200})
	for i := 0; i < 20; i++ {
		f := readFrame(t, c)
		m := f.Value.(*comatproto.SyncSubscribeRepos_Commit)
		verifyCommitFrame(t, n.Lookup(didOf(m.Repo)), m)
	}
	l.Stop()
	got := l.Commits()
	time.Sleep(50 * time.Millisecond)
	if got < 20 || l.Commits() != got || l.Errors() != 0 {
		t.Fatalf("commits %d then %d, errors %d", got, l.Commits(), l.Errors())
	}
}

func BenchmarkFirehoseCommits(b *testing.B) {
	n := New(b)
	accts, err := n.Generate(context.Background(), GenerateOptions{Accounts: 100, Records: 100})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a := accts[i%len(accts)]
			i++
			if _, err := a.CreateRecord("app.bsky.feed.post", Post("app.bsky.feed.post", "b")); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}
