package repos_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

type updateWriter struct{ st store.Store }

func (w updateWriter) Write(ctx context.Context, fn func(tx store.Tx) error) error {
	return w.st.Update(ctx, fn)
}

const did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"

// seed opens a store holding a synced repo at rev r2 with n records in
// each of two collections.
func seed(t *testing.T, n int) store.Store {
	t.Helper()
	db, err := boltstore.Open(t.TempDir()+"/r.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.PutRepo(&store.Repo{DID: did, State: store.StateSynced, Rev: "r2"}); err != nil {
			return err
		}
		for _, coll := range []string{"app.bsky.feed.like", "app.bsky.feed.post"} {
			for i := range n {
				val := []byte(fmt.Sprintf("\xa1avc%s%d", coll, i))
				h, _ := multihash.Sum(val, multihash.SHA2_256, -1)
				ev := &store.Event{Kind: store.KindRecord, DID: did, Rev: "r1", Time: time.Now(), Collection: coll,
					RKey: fmt.Sprintf("k%03d", i), Action: store.ActionCreate, CID: cid.NewCidV1(cid.DagCBOR, h).Bytes(), Record: val}
				if err := store.WriteRecordChange(tx, ev); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func deleteEvents(t *testing.T, st store.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			if ev.Action == store.ActionDelete {
				out[ev.Collection+"/"+ev.RKey] = fmt.Sprintf("%s live=%v", ev.Rev, ev.Live)
			}
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeleteRecords(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		opts      repos.DeleteOptions
		untracked bool // the repo's state is gone before the deletion
		wantN     int64
		wantErr   error
		wantLive  bool
		wantFinal bool
	}{
		{name: "all, in batches, final in the last", opts: repos.DeleteOptions{BatchSize: 3}, wantN: 10, wantFinal: true},
		{name: "batch boundary: final alone", opts: repos.DeleteOptions{BatchSize: 5}, wantN: 10, wantFinal: true},
		{name: "one collection, live", opts: repos.DeleteOptions{Live: true,
			Which: func(c string) bool { return c == "app.bsky.feed.post" }}, wantN: 5, wantLive: true},
		{name: "untracked meanwhile, must exist", opts: repos.DeleteOptions{MustExist: true}, untracked: true, wantErr: repos.ErrGone},
		{name: "untracked: deletes at the records' rev", untracked: true, wantN: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := seed(t, 5)
			w := updateWriter{st}
			if tc.untracked {
				if err := w.Write(ctx, func(tx store.Tx) error { return tx.DeleteRepo(did) }); err != nil {
					t.Fatal(err)
				}
			}
			final := false
			if tc.wantFinal {
				tc.opts.Final = func(tx store.Tx) error {
					n, err := tx.CountRecords(did, "")
					if n != 0 {
						return fmt.Errorf("final ran with %d records left", n)
					}
					final = true
					return err
				}
			}
			n, err := repos.DeleteRecords(ctx, st, w, did, tc.opts)
			if !errors.Is(err, tc.wantErr) || n != tc.wantN {
				t.Fatalf("DeleteRecords = %d, %v; want %d, %v", n, err, tc.wantN, tc.wantErr)
			}
			if final != tc.wantFinal {
				t.Fatalf("final ran: %v, want %v", final, tc.wantFinal)
			}
			evs := deleteEvents(t, st)
			if int64(len(evs)) != tc.wantN {
				t.Fatalf("%d delete events, want %d", len(evs), tc.wantN)
			}
			wantRev := "r2"
			if tc.untracked {
				wantRev = "r1"
			}
			for path, got := range evs {
				if want := fmt.Sprintf("%s live=%v", wantRev, tc.wantLive); got != want {
					t.Errorf("%s: delete event %s, want %s", path, got, want)
				}
			}
			if tc.wantErr != nil {
				return
			}
			// Done again, nothing more is deleted.
			if n, err := repos.DeleteRecords(ctx, st, w, did, repos.DeleteOptions{Which: tc.opts.Which}); err != nil || n != 0 {
				t.Fatalf("again: %d, %v; want nothing", n, err)
			}
		})
	}
}

func TestInactiveState(t *testing.T) {
	for status, want := range map[string]store.RepoState{
		"deactivated": store.StateDeactivated, "takendown": store.StateTakendown,
		"suspended": store.StateSuspended, "deleted": store.StateDeleted,
	} {
		if got, ok := repos.InactiveState(status); !ok || got != want {
			t.Errorf("InactiveState(%q) = %v, %v; want %v", status, got, ok, want)
		}
	}
	for _, status := range []string{"", "throttled", "desynchronized", "other"} {
		if got, ok := repos.InactiveState(status); ok {
			t.Errorf("InactiveState(%q) = %v; want none", status, got)
		}
	}
}

// A backfill ends in synced only when no #sync announced a newer rev; the
// end is left alone when something else moved the repo meanwhile.
func TestFinishBackfill(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		repo   store.Repo
		want   store.RepoState
		queued bool
	}{
		{"synced", store.Repo{State: store.StateBackfilling, Rev: "r2", ErrorKind: "http", Retries: 2}, store.StateSynced, false},
		{"newer #sync: again", store.Repo{State: store.StateBackfilling, Rev: "r2", SyncRev: "r3"}, store.StatePending, true},
		{"desynchronized meanwhile", store.Repo{State: store.StateDesynchronized, Rev: "r2"}, store.StateDesynchronized, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := seed(t, 0)
			kicks := 0
			tb := repos.New(repos.Options{Store: st, Writer: updateWriter{st}, Kick: func() { kicks++ }})
			r := tc.repo
			r.DID = did
			if err := st.Update(ctx, func(tx store.Tx) error {
				if err := tx.PutRepo(&r); err != nil {
					return err
				}
				return tx.Enqueue(did, time.Now())
			}); err != nil {
				t.Fatal(err)
			}
			if err := tb.FinishBackfill(ctx, did); err != nil {
				t.Fatal(err)
			}
			got, err := tb.Get(ctx, did)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tc.want {
				t.Fatalf("state %v, want %v", got.State, tc.want)
			}
			if got.State == store.StateSynced && (got.ErrorKind != "" || got.Retries != 0 || got.SyncRev != "") {
				t.Fatalf("synced with leftovers: %+v", got)
			}
			queued := false
			_ = st.View(ctx, func(tx store.ReadTx) error {
				return tx.ScanQueue(func(d string, _ time.Time) (bool, error) {
					queued = queued || d == did
					return true, nil
				})
			})
			if tc.want != store.StateDesynchronized && queued != tc.queued {
				t.Fatalf("queued %v, want %v", queued, tc.queued)
			}
			if tc.queued && kicks != 1 {
				t.Fatalf("%d kicks, want 1", kicks)
			}
		})
	}
}
