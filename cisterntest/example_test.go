package cisterntest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/cisterntest"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
)

const status = "xyz.statusphere.status"

func statusValue(emoji string) []byte {
	v, err := testnet.Value(map[string]any{"$type": status, "status": emoji, "createdAt": "2026-01-01T00:00:00Z"})
	if err != nil {
		panic(err)
	}
	return v
}

// A small service on a simulated network: it tracks every account that
// posts a statusphere status, and prints each status change with the
// author's handle, from the backfill of the accounts that had one before it
// started to the live changes after.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	net, err := testnet.Start(ctx, testnet.Options{})
	if err != nil {
		panic(err)
	}
	defer net.Close()
	alice, _ := net.CreateAccount("alice.test")
	if _, err := alice.PutRecord(status, "3kaaaaaaaaaa2", statusValue("☀️")); err != nil {
		panic(err)
	}
	// carol holds no status: she is not tracked.
	if _, err := net.CreateAccount("carol.test", testnet.Records("app.bsky.feed.post", 2)); err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "cisterntest-example")
	defer os.RemoveAll(dir)
	cfg := cisterntest.Config(net, filepath.Join(dir, "cistern.db"))
	cfg.Filter = filter.Spec{Signals: []string{status}, Collections: []string{status}}
	ix, err := cistern.Open(cfg)
	if err != nil {
		panic(err)
	}
	defer ix.Close()
	go ix.Run(ctx)

	sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Kinds: []store.EventKind{store.KindRecord}})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	show := func() {
		ev, ok := <-sub.Events()
		if !ok {
			panic(sub.Err())
		}
		repo, err := ix.Repo(ctx, ev.DID)
		if err != nil {
			panic(err)
		}
		var v struct{ Status string }
		if js, err := cistern.ValueJSON(ev.Record); err == nil {
			_ = json.Unmarshal(js, &v)
		}
		fmt.Println(repo.Handle, ev.Action, v.Status)
	}
	show() // alice's status, found by the discovery crawl and backfilled

	// Live changes arrive through the relay's firehose.
	for net.Relay().Connections() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := alice.PutRecord(status, "3kaaaaaaaaaa2", statusValue("🌧️")); err != nil {
		panic(err)
	}
	show()
	bob, _ := net.CreateAccount("bob.test")
	if _, err := bob.PutRecord(status, "3kaaaaaaaaab2", statusValue("🎉")); err != nil {
		panic(err)
	}
	show() // bob is tracked by his first status

	if err := ix.WaitSynced(ctx, bob.DID().String()); err != nil {
		panic(err)
	}
	st, _ := ix.Stats(ctx)
	fmt.Println("repos synced:", st.Repos["synced"])
	// Output:
	// alice.test create ☀️
	// alice.test update 🌧️
	// bob.test create 🎉
	// repos synced: 2
}
