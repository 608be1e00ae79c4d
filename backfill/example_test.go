package backfill_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/writer"
	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/testnet"
)

// A scheduler runs beside the writer and backfills what the store's queue
// holds; the host queues a repo and kicks it.
func ExampleNew() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A simulated network with one account of 3 posts.
	net, err := testnet.Start(ctx, testnet.Options{})
	if err != nil {
		panic(err)
	}
	defer net.Close()
	alice, err := net.CreateAccount("alice.test", testnet.Records("app.bsky.feed.post", 3))
	if err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "cistern-example")
	defer os.RemoveAll(dir)
	st, err := boltstore.Open(filepath.Join(dir, "cistern.db"), nil)
	if err != nil {
		panic(err)
	}
	defer st.Close()
	w := writer.New(st, writer.Options{})
	go w.Run(ctx)

	res := resolver.NewStatic()
	res.Put(&resolver.Identity{DID: alice.DID(), Handle: alice.Handle(), PDS: alice.Host().URL(), SigningKey: alice.PublicKey()})
	f, err := filter.Compile(filter.Spec{DIDs: []string{alice.DID().String()}})
	if err != nil {
		panic(err)
	}

	s, err := backfill.New(backfill.Options{
		Store:    st,
		Writer:   w,
		Resolver: res,
		Filter:   func() *filter.Filter { return f },
		Verify:   true,
	})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	// Track alice: a pending repo state and a queue entry, then a kick.
	did := alice.DID().String()
	err = w.Write(ctx, func(tx store.Tx) error {
		if err := tx.PutRepo(&store.Repo{DID: did, State: store.StatePending, Reason: "explicit"}); err != nil {
			return err
		}
		return tx.Enqueue(did, time.Now())
	})
	if err != nil {
		panic(err)
	}
	s.Kick()

	for s.Stats().Completed == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done

	_ = st.View(ctx, func(tx store.ReadTx) error {
		r, _ := tx.Repo(did)
		n, _ := tx.CountRecords(did, "")
		fmt.Println(r.State, n, "records")
		return nil
	})
	// Output: synced 3 records
}

// A sparse backfill fetches only what the filter stores: here the 2
// statuses of a repo of 500 posts, with getBlocks, never getRepo.
func ExampleStrategy() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net, err := testnet.Start(ctx, testnet.Options{})
	if err != nil {
		panic(err)
	}
	defer net.Close()
	alice, err := net.CreateAccount("alice.test",
		testnet.Records("app.bsky.feed.post", 500), testnet.Records("xyz.statusphere.status", 2))
	if err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "cistern-example")
	defer os.RemoveAll(dir)
	st, err := boltstore.Open(filepath.Join(dir, "cistern.db"), nil)
	if err != nil {
		panic(err)
	}
	defer st.Close()
	w := writer.New(st, writer.Options{})
	go w.Run(ctx)
	res := resolver.NewStatic()
	res.Put(&resolver.Identity{DID: alice.DID(), Handle: alice.Handle(), PDS: alice.Host().URL(), SigningKey: alice.PublicKey()})
	f, err := filter.Compile(filter.Spec{DIDs: []string{alice.DID().String()}, Collections: []string{"xyz.statusphere.status"}})
	if err != nil {
		panic(err)
	}

	strategy, err := backfill.ParseStrategy("sparse") // from a flag, say
	if err != nil {
		panic(err)
	}
	s, err := backfill.New(backfill.Options{
		Store: st, Writer: w, Resolver: res, Verify: true,
		Filter:   func() *filter.Filter { return f },
		Strategy: strategy,
	})
	if err != nil {
		panic(err)
	}
	if err := s.Backfill(ctx, alice.DID().String()); err != nil {
		panic(err)
	}
	stats := s.Stats()
	fmt.Println(stats.Sparse, "sparse backfill,", stats.RecordsWritten, "records,",
		alice.Host().Requests("com.atproto.sync.getRepo"), "getRepo")
	// Output: 1 sparse backfill, 2 records, 0 getRepo
}
