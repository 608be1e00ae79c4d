package cistern_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
)

// snapshot is what invalid input must leave untouched.
type snapshot struct {
	counts         store.Counts
	oldest, newest uint64
	filter         string
	queued         int
}

func takeSnapshot(t testing.TB, ix *cistern.Indexer) snapshot {
	t.Helper()
	var s snapshot
	err := ix.Store().View(context.Background(), func(tx store.ReadTx) error {
		var err error
		if s.counts, err = tx.Counts(); err != nil {
			return err
		}
		if s.oldest, s.newest, err = tx.EventBounds(); err != nil {
			return err
		}
		v, err := tx.Meta("filter")
		if err != nil {
			return err
		}
		s.filter = string(v)
		return tx.ScanQueue(func(string, time.Time) (bool, error) {
			s.queued++
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIndexer_InvalidInputIsRefused(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 4), testnet.Records(like, 2))
	outsider := net.Account(t, "outsider.test")
	ad, od := alice.DID().String(), outsider.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{ad}, Collections: []string{post, like}, Excludes: []string{od}})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, ad)
	rkey := alice.Records()[0].RKey
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		call func() error
		is   error  // errors.Is target, if any
		says string // the error names this
	}{
		// Filter changes.
		{"SetFilter: wildcard inside an NSID", func() error {
			return ix.SetFilter(ctx, filter.Spec{DIDs: []string{ad}, Collections: []string{"app.bsky.*.post"}})
		}, filter.ErrInvalidSpec, "app.bsky.*.post"},
		{"SetFilter: invalid DID", func() error {
			return ix.SetFilter(ctx, filter.Spec{DIDs: []string{ad, "did:nope"}})
		}, filter.ErrInvalidSpec, "did:nope"},
		{"SetFilter: invalid signal", func() error {
			return ix.SetFilter(ctx, filter.Spec{Signals: []string{"status"}})
		}, filter.ErrInvalidSpec, "status"},
		{"SetFilter: invalid exclude", func() error {
			return ix.SetFilter(ctx, filter.Spec{DIDs: []string{ad}, Excludes: []string{"alice.test"}})
		}, filter.ErrInvalidSpec, "alice.test"},
		{"PatchFilter: invalid added collection", func() error {
			_, err := ix.PatchFilter(ctx, filter.Patch{AddCollections: []string{"app.bsky..post"}})
			return err
		}, filter.ErrInvalidSpec, "app.bsky..post"},
		{"PatchFilter: invalid added DID", func() error {
			_, err := ix.PatchFilter(ctx, filter.Patch{AddDIDs: []string{"not-a-did"}})
			return err
		}, filter.ErrInvalidSpec, "not-a-did"},
		{"PatchFilter: one bad entry among good ones", func() error {
			_, err := ix.PatchFilter(ctx, filter.Patch{AddCollections: []string{follow, "*.post"}, AddDIDs: []string{od}})
			return err
		}, filter.ErrInvalidSpec, "*.post"},
		{"PatchFilter: removing every collection", func() error {
			_, err := ix.PatchFilter(ctx, filter.Patch{RemoveCollections: []string{post, like}})
			return err
		}, filter.ErrNoCollections, "every collection"},

		// Repo methods.
		{"Track: not a DID", func() error { return ix.Track(ctx, "alice.test") }, nil, "alice.test"},
		{"Track: empty", func() error { return ix.Track(ctx, "") }, nil, "invalid DID"},
		{"Track: excluded", func() error { return ix.Track(ctx, od) }, nil, od},
		{"Untrack: not a DID", func() error { return ix.Untrack(ctx, "did:plc", true) }, nil, "did:plc"},
		{"Resync: not a DID", func() error { return ix.Resync(ctx, "did:plc:UPPER CASE") }, nil, "did:plc:UPPER CASE"},
		{"Resync: untracked", func() error { return ix.Resync(ctx, od) }, cistern.ErrNotTracked, od},
		{"Repo: not a DID", func() error { _, err := ix.Repo(ctx, "at://x"); return err }, nil, "at://x"},
		{"WaitSynced: not a DID", func() error { return ix.WaitSynced(ctx, "nobody") }, nil, "nobody"},

		// Record queries.
		{"GetRecord: bad DID", func() error { _, err := ix.GetRecord(ctx, "did:", post, rkey); return err }, nil, `"did:"`},
		{"GetRecord: bad collection", func() error { _, err := ix.GetRecord(ctx, ad, "feed post", rkey); return err }, nil, "feed post"},
		{"GetRecord: bad rkey", func() error { _, err := ix.GetRecord(ctx, ad, post, "a/b"); return err }, nil, "a/b"},
		{"GetRecord: dot-dot rkey", func() error { _, err := ix.GetRecord(ctx, ad, post, ".."); return err }, nil, `".."`},
		{"ListRecords: bad DID", func() error {
			_, err := ix.ListRecords(ctx, "did:web:", post, cistern.ListOptions{})
			return err
		}, nil, "did:web:"},
		{"ListRecords: bad collection", func() error {
			_, err := ix.ListRecords(ctx, ad, "app.bsky.feed.*", cistern.ListOptions{})
			return err
		}, nil, "app.bsky.feed.*"},
		{"ListRecords: bad cursor", func() error {
			_, err := ix.ListRecords(ctx, ad, post, cistern.ListOptions{Cursor: "no spaces"})
			return err
		}, nil, "no spaces"},
		{"ListRecords: limit too high", func() error {
			_, err := ix.ListRecords(ctx, ad, post, cistern.ListOptions{Limit: 101})
			return err
		}, nil, "101"},
		{"ListRecords: negative limit", func() error {
			_, err := ix.ListRecords(ctx, ad, post, cistern.ListOptions{Limit: -1})
			return err
		}, nil, "-1"},
		{"ListRepos: bad cursor", func() error {
			_, err := ix.ListRepos(ctx, cistern.ListReposOptions{Cursor: "zzz"})
			return err
		}, nil, "zzz"},
		{"ListCollection: bad collection", func() error {
			_, err := ix.ListCollection(ctx, "post", 0, 10)
			return err
		}, nil, "post"},

		// Event stream.
		{"Subscribe: cursor beyond the log", func() error {
			_, err := ix.Subscribe(ctx, stream.SubscribeOptions{Cursor: 1 << 40})
			return err
		}, stream.ErrFutureCursor, "1099511627776"},
		{"Subscribe: bad collection pattern", func() error {
			_, err := ix.Subscribe(ctx, stream.SubscribeOptions{Collections: []string{"app.*.post"}})
			return err
		}, stream.ErrInvalidOptions, "app.*.post"},
		{"Subscribe: bad consumer name", func() error {
			_, err := ix.Subscribe(ctx, stream.SubscribeOptions{Name: "my app"})
			return err
		}, stream.ErrInvalidOptions, "my app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, ix)
			spec := ix.Filter().Spec()
			err := tc.call()
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not name %q", err, tc.says)
			}
			if after := takeSnapshot(t, ix); !reflect.DeepEqual(before, after) {
				t.Errorf("the store changed:\n before %+v\n after  %+v", before, after)
			}
			if got := ix.Filter().Spec(); !got.Equal(spec) {
				t.Errorf("the filter in force changed to %+v", got)
			}
		})
	}
	assertConverged(t, ix, alice)
}

func TestIndexer_BadInputErrorsAreSentinels(t *testing.T) {
	net := testnet.New(t)
	ex := net.Account(t, "excluded.test")
	cfg := testConfig(t, net, filter.Spec{Excludes: []string{ex.DID().String()}})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	ctx := context.Background()
	for name, err := range map[string]error{
		"Track":          ix.Track(ctx, "did:nope"),
		"GetRecord rkey": func() error { _, err := ix.GetRecord(ctx, ex.DID().String(), "app.bsky.feed.post", "a/b"); return err }(),
		"ListRecords": func() error {
			_, err := ix.ListRecords(ctx, ex.DID().String(), "nsid", cistern.ListOptions{})
			return err
		}(),
		"ListRepos": func() error { _, err := ix.ListRepos(ctx, cistern.ListReposOptions{Limit: 5000}); return err }(),
	} {
		if !errors.Is(err, cistern.ErrInvalidArgument) {
			t.Errorf("%s: %v does not wrap ErrInvalidArgument", name, err)
		}
	}
	if err := ix.Track(ctx, ex.DID().String()); !errors.Is(err, cistern.ErrExcluded) {
		t.Errorf("Track of an excluded DID: %v, want ErrExcluded", err)
	}
}
