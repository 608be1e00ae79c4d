package cistern_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// The library answers as the HTTP API does: a repo it does not know is
// ErrNotTracked (not an empty page), a handle of a tracked repo works where
// a DID does, and after Close every query fails with ErrClosed.
func TestIndexer_QueryErrors(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 3))
	stranger := net.Account(t, "stranger.test", testnet.Records(post, 1))
	ad, sd := alice.DID().String(), stranger.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{ad}})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, ad)
	ctx := context.Background()
	rkey := alice.Records()[0].RKey

	t.Run("untracked repo", func(t *testing.T) {
		if _, err := ix.ListRecords(ctx, sd, post, cistern.ListOptions{}); !errors.Is(err, cistern.ErrNotTracked) {
			t.Errorf("ListRecords of an untracked DID = %v; want ErrNotTracked", err)
		}
		_, err := ix.GetRecord(ctx, sd, post, rkey)
		if !errors.Is(err, cistern.ErrNotTracked) || !errors.Is(err, cistern.ErrRecordNotFound) {
			t.Errorf("GetRecord of an untracked DID = %v; want ErrNotTracked and ErrRecordNotFound", err)
		}
		// A tracked repo without records in a collection is an empty page.
		page, err := ix.ListRecords(ctx, ad, like, cistern.ListOptions{})
		if err != nil || len(page.Records) != 0 {
			t.Errorf("ListRecords of an empty collection = %v, %v; want an empty page", page, err)
		}
		if _, err := ix.GetRecord(ctx, ad, post, "3zzzzzzzzzzzz"); !errors.Is(err, cistern.ErrRecordNotFound) || errors.Is(err, cistern.ErrNotTracked) {
			t.Errorf("GetRecord of an absent record = %v; want ErrRecordNotFound only", err)
		}
	})

	t.Run("handles", func(t *testing.T) {
		if r, err := ix.Repo(ctx, "alice.test"); err != nil || r.DID != ad {
			t.Errorf("Repo by handle = %v, %v", r, err)
		}
		page, err := ix.ListRecords(ctx, "alice.test", post, cistern.ListOptions{})
		if err != nil || len(page.Records) != 3 || page.Records[0].DID != ad {
			t.Fatalf("ListRecords by handle = %v, %v", page, err)
		}
		if rec, err := ix.GetRecord(ctx, "Alice.Test", post, rkey); err != nil || rec.DID != ad {
			t.Errorf("GetRecord by handle = %v, %v", rec, err)
		}
		if n, err := ix.CountRecords(ctx, "alice.test", ""); err != nil || n != 3 {
			t.Errorf("CountRecords by handle = %d, %v", n, err)
		}
		if _, err := ix.ListRecords(ctx, "stranger.test", post, cistern.ListOptions{}); !errors.Is(err, cistern.ErrNotTracked) {
			t.Errorf("ListRecords by the handle of an untracked repo = %v; want ErrNotTracked", err)
		}
		if _, err := ix.ListRecords(ctx, "not a handle", post, cistern.ListOptions{}); !errors.Is(err, cistern.ErrInvalidArgument) {
			t.Errorf("ListRecords of garbage = %v; want ErrInvalidArgument", err)
		}
	})

	t.Run("after Close", func(t *testing.T) {
		cfg := testConfig(t, net, filter.Spec{DIDs: []string{ad}})
		cfg.Path = filepath.Join(t.TempDir(), "closed.db")
		cfg.NoFirehose = true
		ix, err := cistern.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := ix.Close(); err != nil {
			t.Fatal(err)
		}
		for name, err := range map[string]error{
			"ListRecords":      func() error { _, err := ix.ListRecords(ctx, ad, post, cistern.ListOptions{}); return err }(),
			"GetRecord":        func() error { _, err := ix.GetRecord(ctx, ad, post, rkey); return err }(),
			"CountRecords":     func() error { _, err := ix.CountRecords(ctx, ad, ""); return err }(),
			"CollectionCounts": func() error { _, err := ix.CollectionCounts(ctx, ad); return err }(),
			"ListCollection":   func() error { _, err := ix.ListCollection(ctx, post, 0, 10); return err }(),
			"LookupHandle":     func() error { _, err := ix.LookupHandle(ctx, "alice.test"); return err }(),
			"Stats":            func() error { _, err := ix.Stats(ctx); return err }(),
			"Repo":             func() error { _, err := ix.Repo(ctx, ad); return err }(),
			"ListRepos":        func() error { _, err := ix.ListRepos(ctx, cistern.ListReposOptions{}); return err }(),
			"WaitSynced":       ix.WaitSynced(ctx, ad),
			"Track":            ix.Track(ctx, sd),
			"Untrack":          ix.Untrack(ctx, ad, true),
			"Resync":           ix.Resync(ctx, ad),
			"SetFilter":        ix.SetFilter(ctx, filter.Spec{DIDs: []string{sd}}),
			"PatchFilter":      func() error { _, err := ix.PatchFilter(ctx, filter.Patch{AddDIDs: []string{sd}}); return err }(),
			"Consumers":        func() error { _, err := ix.Consumers(ctx); return err }(),
			"Prune":            func() error { _, err := ix.Prune(ctx); return err }(),
		} {
			if !errors.Is(err, cistern.ErrClosed) {
				t.Errorf("%s after Close = %v; want ErrClosed", name, err)
			}
		}
	})
}
