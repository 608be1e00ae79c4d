package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// utcRepo returns r with its times in UTC, for comparison.
func utcRepo(r store.Repo) store.Repo {
	r.NextAttempt = r.NextAttempt.UTC()
	r.Updated = r.Updated.UTC()
	return r
}

func testRepoRoundTrip(t *testing.T, s store.Store) {
	full := &store.Repo{
		DID: "did:plc:alice", State: store.StateError, Rev: "3lbsuvkbmwk2a",
		Data:   "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
		Handle: "alice.test", PDS: "https://pds.example", SigningKey: "zQ3shP2mWsZYWgvgM11GwY4J8X4X4a",
		Status: "takendown", ErrorKind: "fetch", LastError: "connection refused", Retries: 3,
		NextAttempt: time.Date(2026, 6, 1, 12, 30, 45, 123456789, time.FixedZone("X", 3600)),
		Reason:      "signal", Updated: time.Date(2026, 5, 31, 1, 2, 3, 4, time.UTC), Resync: true,
	}
	minimal := &store.Repo{DID: "did:web:bob.example", State: store.StatePending}
	update(t, s, func(tx store.Tx) error {
		for _, r := range []*store.Repo{full, minimal} {
			if err := tx.PutRepo(r); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.ReadTx) error {
		for _, want := range []*store.Repo{full, minimal} {
			got, err := tx.Repo(want.DID)
			if err != nil {
				return fmt.Errorf("Repo(%s): %w", want.DID, err)
			}
			if g, w := utcRepo(*got), utcRepo(*want); !reflect.DeepEqual(g, w) {
				t.Errorf("Repo(%s) =\n%+v\nwant\n%+v", want.DID, g, w)
			}
		}
		if _, err := tx.Repo("did:plc:nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Repo(absent) error = %v, want ErrNotFound", err)
		}
		return nil
	})

	// Replacing keeps one repo with the new state.
	update(t, s, func(tx store.Tx) error {
		return tx.PutRepo(&store.Repo{DID: full.DID, State: store.StateSynced, Rev: "3lbsuvkbmwk2b"})
	})
	var dids []string
	view(t, s, func(tx store.ReadTx) error {
		got, err := tx.Repo(full.DID)
		if err != nil {
			return err
		}
		if got.State != store.StateSynced || got.Rev != "3lbsuvkbmwk2b" || got.Handle != "" {
			t.Errorf("replaced repo = %+v, want state synced, rev 3lbsuvkbmwk2b, no handle", got)
		}
		return tx.ScanRepos("", func(r *store.Repo) (bool, error) {
			dids = append(dids, r.DID)
			return true, nil
		})
	})
	if want := []string{"did:plc:alice", "did:web:bob.example"}; !reflect.DeepEqual(dids, want) {
		t.Errorf("ScanRepos = %v, want %v", dids, want)
	}
}

func testRepoOrder(t *testing.T, s store.Store) {
	// Inserted out of order; "did:plc:a" is a prefix of "did:plc:ab".
	in := []string{"did:plc:c", "did:plc:ab", "did:web:a.example", "did:plc:a", "did:plc:b", "did:plc:a0"}
	want := []string{"did:plc:a", "did:plc:a0", "did:plc:ab", "did:plc:b", "did:plc:c", "did:web:a.example"}
	update(t, s, func(tx store.Tx) error {
		for _, did := range in {
			if err := tx.PutRepo(&store.Repo{DID: did, State: store.StateSynced}); err != nil {
				return err
			}
		}
		return nil
	})
	scan := func(after string) []string {
		var out []string
		view(t, s, func(tx store.ReadTx) error {
			return tx.ScanRepos(after, func(r *store.Repo) (bool, error) {
				out = append(out, r.DID)
				return true, nil
			})
		})
		return out
	}
	tests := []struct {
		after string
		want  []string
	}{
		{"", want},
		{"did:plc:a", want[1:]},
		{"did:plc:a00", want[2:]}, // absent cursor: next greater
		{"did:plc:c", want[5:]},
		{"did:web:a.example", nil},
		{"did:zzz", nil},
	}
	for _, tc := range tests {
		if got := scan(tc.after); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ScanRepos(after %q) = %v, want %v", tc.after, got, tc.want)
		}
	}
}

func testCountsByState(t *testing.T, s store.Store) {
	put := func(did string, st store.RepoState) {
		update(t, s, func(tx store.Tx) error { return tx.PutRepo(&store.Repo{DID: did, State: st}) })
	}
	check := func(step string, repos int64, want map[store.RepoState]int64) {
		t.Helper()
		c := counts(t, s)
		if c.Repos != repos || !reflect.DeepEqual(nonZero(c.ReposByState), want) {
			t.Errorf("%s: Counts repos=%d by state %v, want %d %v", step, c.Repos, nonZero(c.ReposByState), repos, want)
		}
	}
	check("empty", 0, map[store.RepoState]int64{})
	put("did:plc:a", store.StatePending)
	put("did:plc:b", store.StatePending)
	put("did:plc:c", store.StateSynced)
	check("three", 3, map[store.RepoState]int64{store.StatePending: 2, store.StateSynced: 1})
	put("did:plc:a", store.StateBackfilling)
	put("did:plc:c", store.StateSynced) // same state again
	check("transitions", 3, map[store.RepoState]int64{store.StatePending: 1, store.StateBackfilling: 1, store.StateSynced: 1})
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRepo("did:plc:b"); err != nil {
			return err
		}
		if err := tx.DeleteRepo("did:plc:absent"); err != nil {
			return err
		}
		// Several changes to one repo in one transaction.
		if err := tx.PutRepo(&store.Repo{DID: "did:plc:d", State: store.StateError}); err != nil {
			return err
		}
		return tx.PutRepo(&store.Repo{DID: "did:plc:d", State: store.StateDeleted})
	})
	check("delete", 3, map[store.RepoState]int64{store.StateBackfilling: 1, store.StateSynced: 1, store.StateDeleted: 1})
}

func testDeleteRepo(t *testing.T, s store.Store) {
	const did, other = "did:plc:gone", "did:plc:gonex"
	r := newRecord(did, "app.bsky.feed.post", "3k1", "kept")
	update(t, s, func(tx store.Tx) error {
		for _, d := range []string{did, other} {
			if err := tx.PutRepo(&store.Repo{DID: d, State: store.StateBackfilling}); err != nil {
				return err
			}
			if err := tx.Enqueue(d, time.Unix(1000, 0)); err != nil {
				return err
			}
			for _, rev := range []string{"3a", "3b"} {
				if err := tx.PutBuffer(&store.BufferedCommit{DID: d, Rev: rev, Seq: 7, Data: []byte("x")}); err != nil {
					return err
				}
			}
		}
		return tx.PutRecord(r)
	})
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRepo(did); err != nil {
			return err
		}
		return tx.DeleteRepo("did:plc:never")
	})
	view(t, s, func(tx store.ReadTx) error {
		if _, err := tx.Repo(did); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Repo after DeleteRepo: err = %v, want ErrNotFound", err)
		}
		var queued []string
		if err := tx.ScanQueue(func(d string, _ time.Time) (bool, error) {
			queued = append(queued, d)
			return true, nil
		}); err != nil {
			return err
		}
		if !reflect.DeepEqual(queued, []string{other}) {
			t.Errorf("queue after DeleteRepo = %v, want [%s]", queued, other)
		}
		for d, want := range map[string]int{did: 0, other: 2} {
			n := 0
			if err := tx.ScanBuffer(d, func(*store.BufferedCommit) (bool, error) { n++; return true, nil }); err != nil {
				return err
			}
			if n != want {
				t.Errorf("buffered commits of %s = %d, want %d", d, n, want)
			}
		}
		if _, err := tx.Record(did, r.Collection, r.RKey); err != nil {
			t.Errorf("record after DeleteRepo: %v (records are kept)", err)
		}
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		if c.Repos != 1 || c.Records != 1 {
			t.Errorf("Counts after DeleteRepo: repos %d records %d, want 1 1", c.Repos, c.Records)
		}
		return nil
	})
}

func testRepoByHandle(t *testing.T, s store.Store) {
	const alice, bob = "did:plc:alice", "did:plc:bob"
	lookup := func(h string) string {
		t.Helper()
		var did string
		view(t, s, func(tx store.ReadTx) error {
			r, err := tx.RepoByHandle(h)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			did = r.DID
			return nil
		})
		return did
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRepo(&store.Repo{DID: alice, State: store.StateSynced, Handle: "Alice.Test"}); err != nil {
			return err
		}
		return tx.PutRepo(&store.Repo{DID: bob, State: store.StateSynced, Handle: "handle.invalid"})
	})
	if got := lookup("alice.test"); got != alice {
		t.Errorf("RepoByHandle(alice.test) = %q, want %s (handles compare without case)", got, alice)
	}
	if got := lookup("handle.invalid"); got != "" {
		t.Errorf("RepoByHandle(handle.invalid) = %q, want not found", got)
	}
	// The handle moves from alice to bob: the index follows.
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutRepo(&store.Repo{DID: alice, State: store.StateSynced, Handle: "alice2.test"}); err != nil {
			return err
		}
		return tx.PutRepo(&store.Repo{DID: bob, State: store.StateSynced, Handle: "alice.test"})
	})
	if got := lookup("alice.test"); got != bob {
		t.Errorf("after the handle moved, RepoByHandle(alice.test) = %q, want %s", got, bob)
	}
	if got := lookup("alice2.test"); got != alice {
		t.Errorf("RepoByHandle(alice2.test) = %q, want %s", got, alice)
	}
	// A failed transaction leaves the index as it was.
	boom := errors.New("boom")
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.PutRepo(&store.Repo{DID: alice, State: store.StateSynced, Handle: "rolled.back"}); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	if got := lookup("rolled.back"); got != "" {
		t.Errorf("a rolled-back handle is indexed (%q)", got)
	}
	update(t, s, func(tx store.Tx) error { return tx.DeleteRepo(bob) })
	if got := lookup("alice.test"); got != "" {
		t.Errorf("RepoByHandle after DeleteRepo = %q, want not found", got)
	}
}
