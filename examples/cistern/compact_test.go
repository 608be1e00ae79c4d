package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// Space freed inside the bbolt file comes back through -compact-to.
func TestCompactStore_GivesBackFreePages(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.db")
	db, err := bolt.Open(src, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 4096)
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := range 2000 {
			if err := b.Put([]byte{byte(i >> 8), byte(i)}, val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := 10; i < 2000; i++ {
			if err := b.Delete([]byte{byte(i >> 8), byte(i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	dst := filepath.Join(dir, "small.db")
	var out strings.Builder
	if err := compactStore(src, dst, &out); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(src)
	b, _ := os.Stat(dst)
	if b.Size()*4 > a.Size() {
		t.Fatalf("compacted %d bytes into %d", a.Size(), b.Size())
	}
	if !strings.Contains(out.String(), "mv "+dst+" "+src) {
		t.Fatalf("output %q does not say what to do next", out.String())
	}
	db, err = bolt.Open(dst, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket([]byte("b")).Stats().KeyN; n != 10 {
			t.Errorf("%d keys after compaction, want 10", n)
		}
		return nil
	})

	if err := compactStore(src, dst, io.Discard); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("compacting onto an existing file: %v", err)
	}
}

// A cistern store compacts into one that opens with the same contents, and
// a store in use is refused.
func TestCompactStore_Cistern(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records("app.bsky.feed.post", 50))
	dir := t.TempDir()
	src := filepath.Join(dir, "c.db")
	ix, err := cistern.Open(cistern.Config{Path: src, RelayURL: net.RelayURL(), PLCURL: net.PLCURL(), SkipHandleVerification: true,
		Filter: filter.Spec{DIDs: []string{alice.DID().String()}}, NoCrawl: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ix.Run(runCtx) }()
	if err := ix.WaitSynced(ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	if err := compactStore(src, filepath.Join(dir, "busy.db"), io.Discard); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("compacting a store in use: %v", err)
	}
	stop()
	<-done
	before, _ := ix.Stats(ctx)
	ix.Close()

	dst := filepath.Join(dir, "compact.db")
	if err := compactStore(src, dst, io.Discard); err != nil {
		t.Fatal(err)
	}
	ix, err = cistern.Open(cistern.Config{Path: dst, NoFirehose: true, NoCrawl: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	after, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Records != 50 || after.Records != before.Records || after.NewestEvent != before.NewestEvent {
		t.Fatalf("after compaction %d records, newest event %d; before %d, %d", after.Records, after.NewestEvent, before.Records, before.NewestEvent)
	}
}
