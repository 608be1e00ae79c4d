package backlinks

import (
	"context"
	"fmt"
	"strings"

	"github.com/cistern-dev/cistern/store"
)

// Key names one source of links to one target.
type Key struct {
	Target, Collection, Path string
}

// Recount computes from the stored records what the index should hold: the
// count of each (target, collection, path) and the number of entries. It
// reads every record with its value, in one read transaction: it is for
// checks and tests, not for serving.
func Recount(ctx context.Context, st store.Store) (map[Key]store.BacklinkCount, int64, error) {
	counts := map[Key]store.BacklinkCount{}
	dids := map[Key]map[string]bool{}
	var entries int64
	err := st.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanRepos("", func(repo *store.Repo) (bool, error) {
			err := tx.ScanRecords(store.RecordScan{DID: repo.DID, WithValues: true}, func(r *store.Record) (bool, error) {
				links, _ := Extract(r.Value)
				for _, l := range links {
					k := Key{l.Target, r.Collection, l.Path}
					n := counts[k]
					n.Records++
					if dids[k] == nil {
						dids[k] = map[string]bool{}
					}
					if !dids[k][r.DID] {
						dids[k][r.DID] = true
						n.DIDs++
					}
					counts[k] = n
					entries++
				}
				return true, nil
			})
			return err == nil, err
		})
	})
	return counts, entries, err
}

// Verify checks the store's index against Recount: every count, the
// number of records each source lists, and the number of entries (so that
// no entry is left over). It returns an error naming the first
// differences.
func Verify(ctx context.Context, st store.Store) error {
	want, entries, err := Recount(ctx, st)
	if err != nil {
		return err
	}
	var diffs []string
	err = st.View(ctx, func(tx store.ReadTx) error {
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		if c.Links != entries {
			diffs = append(diffs, fmt.Sprintf("Counts.Links = %d, recount %d", c.Links, entries))
		}
		for k, n := range want {
			got, err := tx.CountBacklinks(k.Target, k.Collection, k.Path)
			if err != nil {
				return err
			}
			if got != n {
				diffs = append(diffs, fmt.Sprintf("%s from %s:%s: count %+v, recount %+v", k.Target, k.Collection, k.Path, got, n))
			}
			listed := int64(0)
			err = tx.ScanBacklinks(store.BacklinkScan{Target: k.Target, Collection: k.Collection, Path: k.Path},
				func(*store.Backlink) (bool, error) { listed++; return true, nil })
			if err != nil {
				return err
			}
			if listed != n.Records {
				diffs = append(diffs, fmt.Sprintf("%s from %s:%s: %d listed, recount %d", k.Target, k.Collection, k.Path, listed, n.Records))
			}
			if len(diffs) > 10 {
				break
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(diffs) > 0 {
		return fmt.Errorf("backlinks: index differs from a recount of the records:\n%s", strings.Join(diffs, "\n"))
	}
	return nil
}
