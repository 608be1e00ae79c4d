package cistern_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
)

// exampleNetwork starts a simulated network with one account, alice.test,
// holding the posts post1..post3 ("first", "second", "third") and one
// like. The examples run against it instead of the real network.
func exampleNetwork() (*testnet.Network, *testnet.Account) {
	net, err := testnet.Start(context.Background(), testnet.Options{})
	if err != nil {
		panic(err)
	}
	alice, err := net.CreateAccount("alice.test")
	if err != nil {
		panic(err)
	}
	for i, text := range []string{"first", "second", "third"} {
		v, _ := testnet.Value(map[string]any{"$type": "app.bsky.feed.post", "text": text})
		if _, err := alice.PutRecord("app.bsky.feed.post", fmt.Sprintf("post%d", i+1), v); err != nil {
			panic(err)
		}
	}
	v, _ := testnet.Value(map[string]any{"$type": "app.bsky.feed.like", "subject": "post1"})
	if _, err := alice.PutRecord("app.bsky.feed.like", "like1", v); err != nil {
		panic(err)
	}
	return net, alice
}

// exampleConfig points an Indexer at the simulated network, with a fresh
// store in dir.
func exampleConfig(net *testnet.Network, dir string, spec filter.Spec) cistern.Config {
	return cistern.Config{
		Path:                   filepath.Join(dir, "cistern.db"),
		RelayURL:               net.RelayURL(),
		PLCURL:                 net.PLCURL(),
		SkipHandleVerification: true, // .test handles have no DNS
		Filter:                 spec,
		Logger:                 slog.New(slog.DiscardHandler),
	}
}

// Open an Indexer on a store, say what to index, run it, and query what it
// holds once a repo is synced.
func ExampleOpen() {
	net, alice := exampleNetwork()
	defer net.Close()
	dir, _ := os.MkdirTemp("", "cistern-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ix, err := cistern.Open(cistern.Config{
		Path:                   filepath.Join(dir, "cistern.db"),
		RelayURL:               net.RelayURL(), // default wss://bsky.network
		PLCURL:                 net.PLCURL(),   // default https://plc.directory
		SkipHandleVerification: true,
		Filter: filter.Spec{
			DIDs:        []string{alice.DID().String()},
			Collections: []string{"app.bsky.feed.post"},
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer ix.Close()
	go ix.Run(ctx)

	if err := ix.WaitSynced(ctx, alice.DID().String()); err != nil {
		panic(err)
	}
	page, err := ix.ListRecords(ctx, alice.DID().String(), "app.bsky.feed.post", cistern.ListOptions{Reverse: true})
	if err != nil {
		panic(err)
	}
	for _, r := range page.Records {
		value, _ := r.JSON()
		fmt.Println(r.RKey, string(value))
	}
	n, _ := ix.CountRecords(ctx, alice.DID().String(), "app.bsky.feed.like")
	fmt.Println("likes stored:", n)
	// Output:
	// post1 {"text":"first","$type":"app.bsky.feed.post"}
	// post2 {"text":"second","$type":"app.bsky.feed.post"}
	// post3 {"text":"third","$type":"app.bsky.feed.post"}
	// likes stored: 0
}

// Subscribe delivers the event log in order: first what is retained (here
// the backfill of a repo), then live changes as they are committed.
func ExampleIndexer_Subscribe() {
	net, alice := exampleNetwork()
	defer net.Close()
	dir, _ := os.MkdirTemp("", "cistern-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ix, err := cistern.Open(exampleConfig(net, dir, filter.Spec{Collections: []string{"app.bsky.feed.post"}}))
	if err != nil {
		panic(err)
	}
	defer ix.Close()
	go ix.Run(ctx)

	sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Cursor: 0})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	if err := ix.Track(ctx, alice.DID().String()); err != nil {
		panic(err)
	}
	next := func(n int) {
		for i := 0; i < n; i++ {
			ev, ok := <-sub.Events()
			if !ok {
				panic(sub.Err())
			}
			fmt.Println(ev.ID, ev.Action, ev.Collection, ev.RKey, "live:", ev.Live)
		}
	}
	next(3) // the backfill

	// A post written now arrives through the firehose.
	for net.Relay().Connections() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := alice.DeleteRecord("app.bsky.feed.post", "post2"); err != nil {
		panic(err)
	}
	next(1)
	// Output:
	// 1 create app.bsky.feed.post post1 live: false
	// 2 create app.bsky.feed.post post2 live: false
	// 3 create app.bsky.feed.post post3 live: false
	// 4 delete app.bsky.feed.post post2 live: true
}

// SetFilter changes what is indexed while the Indexer runs: a widened
// filter backfills the newly included collections, a narrowed one removes
// what it no longer includes, and an invalid one is refused.
func ExampleIndexer_SetFilter() {
	net, alice := exampleNetwork()
	defer net.Close()
	dir, _ := os.MkdirTemp("", "cistern-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	did := alice.DID().String()
	ix, err := cistern.Open(exampleConfig(net, dir, filter.Spec{DIDs: []string{did}, Collections: []string{"app.bsky.feed.post"}}))
	if err != nil {
		panic(err)
	}
	defer ix.Close()
	go ix.Run(ctx)
	show := func() {
		if err := ix.WaitSynced(ctx, did); err != nil {
			panic(err)
		}
		counts, _ := ix.CollectionCounts(ctx, did)
		fmt.Println(ix.Filter().Spec().Collections, counts)
	}
	show()

	// Widen: the likes are backfilled.
	if err := ix.SetFilter(ctx, filter.Spec{DIDs: []string{did}, Collections: []string{"app.bsky.feed.*"}}); err != nil {
		panic(err)
	}
	show()

	// Narrow: refused until the deletion is confirmed; then the posts are
	// removed, each with a delete event.
	narrow := filter.Patch{
		AddCollections:    []string{"app.bsky.feed.like"},
		RemoveCollections: []string{"app.bsky.feed.*"},
	}
	_, err = ix.PatchFilter(ctx, narrow)
	fmt.Println(errors.Is(err, filter.ErrDeleteNotConfirmed))
	narrow.ConfirmDelete = true
	if _, err := ix.PatchFilter(ctx, narrow); err != nil {
		panic(err)
	}
	show()

	// An invalid pattern changes nothing.
	err = ix.SetFilter(ctx, filter.Spec{DIDs: []string{did}, Collections: []string{"app.*.post"}})
	fmt.Println(err)
	show()
	// Output:
	// [app.bsky.feed.post] map[app.bsky.feed.post:3]
	// [app.bsky.feed.*] map[app.bsky.feed.like:1 app.bsky.feed.post:3]
	// true
	// [app.bsky.feed.like] map[app.bsky.feed.like:1]
	// filter: collections[0] "app.*.post": filter: invalid collection pattern "app.*.post": a wildcard is allowed only as a whole last segment (".*") or as "*" alone
	// [app.bsky.feed.like] map[app.bsky.feed.like:1]
}

// ReplaceFilter is SetFilter for a caller that must confirm deletions, as
// the HTTP API's PUT /filter: a change that would delete stored records is
// refused, naming them, until confirmDelete is true.
func ExampleIndexer_ReplaceFilter() {
	net, alice := exampleNetwork()
	defer net.Close()
	dir, _ := os.MkdirTemp("", "cistern-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	did := alice.DID().String()
	ix, err := cistern.Open(exampleConfig(net, dir, filter.Spec{DIDs: []string{did}}))
	if err != nil {
		panic(err)
	}
	defer ix.Close()
	go ix.Run(ctx)
	if err := ix.WaitSynced(ctx, did); err != nil {
		panic(err)
	}

	likesOnly := filter.Spec{DIDs: []string{did}, Collections: []string{"app.bsky.feed.like"}}
	err = ix.ReplaceFilter(ctx, likesOnly, false)
	var de *filter.DeleteError
	fmt.Println(errors.As(err, &de), de.Collections, de.Kept)

	if err := ix.ReplaceFilter(ctx, likesOnly, true); err != nil {
		panic(err)
	}
	counts, _ := ix.CollectionCounts(ctx, did)
	fmt.Println(counts)
	// Output:
	// true [*] [app.bsky.feed.like]
	// map[app.bsky.feed.like:1]
}

// A tool that replays a backlog places the firehose cursor itself before
// Run, and reads it back to see how far Run got.
func ExampleIndexer_SetCursor() {
	net, _ := exampleNetwork()
	defer net.Close()
	dir, _ := os.MkdirTemp("", "cistern-example")
	defer os.RemoveAll(dir)
	ix, err := cistern.Open(cistern.Config{
		Path:     filepath.Join(dir, "cistern.db"),
		RelayURL: net.RelayURL(),
		PLCURL:   net.PLCURL(),
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer ix.Close()
	ctx := context.Background()
	if err := ix.SetCursor(ctx, net.RelayURL(), 2); err != nil { // Run asks for the messages after 2
		panic(err)
	}
	c, err := ix.Cursor(ctx, net.RelayURL())
	fmt.Println(c, err)
	// Output: 2 <nil>
}
