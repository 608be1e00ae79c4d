package cistern_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

func TestReadOnly_RefusesWritesAndServesReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	spec := filter.Spec{Signals: []string{"xyz.statusphere.status"}}
	ix, err := cistern.Open(cistern.Config{Path: path, NoFirehose: true, NoCrawl: true, Filter: spec})
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := cistern.Open(cistern.Config{Path: path, ReadOnly: true, Filter: spec}); !errors.Is(err, cistern.ErrInvalidArgument) {
		t.Errorf("Open(ReadOnly, Filter) = %v, want ErrInvalidArgument", err)
	}
	db, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ro, err := cistern.Open(cistern.Config{Store: db, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if !ro.ReadOnly() {
		t.Errorf("ReadOnly() = false")
	}
	if got := ro.Filter().Spec().Signals; len(got) != 1 || got[0] != spec.Signals[0] {
		t.Errorf("read-only Filter signals = %v, want the persisted %v", got, spec.Signals)
	}
	ctx := t.Context()
	const did = "did:plc:abcdefghijklmnopqrstuvwx"
	for name, err := range map[string]error{
		"Track":     ro.Track(ctx, did),
		"Untrack":   ro.Untrack(ctx, did, false),
		"Resync":    ro.Resync(ctx, did),
		"SetFilter": ro.SetFilter(ctx, filter.Spec{FullNetwork: true}),
	} {
		if !errors.Is(err, cistern.ErrReadOnly) {
			t.Errorf("%s on a read-only Indexer = %v, want ErrReadOnly", name, err)
		}
	}
	if _, err := ro.Stats(ctx); err != nil {
		t.Errorf("Stats: %v", err)
	}
	sub, err := ro.Subscribe(ctx, stream.SubscribeOptions{Name: "replica-consumer"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Ack(ctx, 0); !errors.Is(err, cistern.ErrReadOnly) {
		t.Errorf("Ack on a read-only Indexer = %v, want ErrReadOnly", err)
	}
}
