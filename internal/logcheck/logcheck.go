// Package logcheck checks cistern's central promise in tests: the records
// stored for a repo, and the event log folded in id order, both equal what
// the repo's PDS holds, CID for CID. The test suites of the root package and
// of backfill share it; it is nobody's API.
package logcheck

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

// Events returns the retained events after id `after`, values loaded.
func Events(ctx context.Context, st store.Store, after uint64) ([]*store.Event, error) {
	var evs []*store.Event
	err := st.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanEvents(after, func(ev *store.Event) (bool, error) {
			evs = append(evs, ev)
			return true, nil
		})
	})
	return evs, err
}

// Fold applies the record events in id order and returns DID → path → CID.
// It refuses an event that does not follow from the state before it: an id
// not above the one before, a create of an existing record, an update of a
// missing record or to the CID it already has, a delete of a missing
// record, a create or update without its value, or a rev below that of the
// repo's previous event. So a doubled or lost event fails the fold.
func Fold(evs []*store.Event) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	lastRev := map[string]string{}
	var last uint64
	for _, ev := range evs {
		if ev.ID <= last {
			return nil, fmt.Errorf("event id %d after %d", ev.ID, last)
		}
		last = ev.ID
		if ev.Kind != store.KindRecord {
			continue
		}
		if ev.Rev < lastRev[ev.DID] {
			return nil, fmt.Errorf("event %d of %s has rev %s after rev %s", ev.ID, ev.DID, ev.Rev, lastRev[ev.DID])
		}
		lastRev[ev.DID] = ev.Rev
		m := out[ev.DID]
		if m == nil {
			m = map[string]string{}
			out[ev.DID] = m
		}
		path := ev.Collection + "/" + ev.RKey
		old, had := m[path]
		switch ev.Action {
		case store.ActionCreate, store.ActionUpdate:
			c, err := cid.Cast(ev.CID)
			if err != nil {
				return nil, fmt.Errorf("event %d: %w", ev.ID, err)
			}
			switch {
			case len(ev.Record) == 0:
				return nil, fmt.Errorf("event %d: %s of %s/%s without value", ev.ID, ev.Action, ev.DID, path)
			case ev.Action == store.ActionCreate && had:
				return nil, fmt.Errorf("event %d: create of existing %s/%s", ev.ID, ev.DID, path)
			case ev.Action == store.ActionUpdate && !had:
				return nil, fmt.Errorf("event %d: update of missing %s/%s", ev.ID, ev.DID, path)
			case ev.Action == store.ActionUpdate && old == c.String():
				return nil, fmt.Errorf("event %d: update of %s/%s to the CID it has", ev.ID, ev.DID, path)
			}
			m[path] = c.String()
		case store.ActionDelete:
			if !had {
				return nil, fmt.Errorf("event %d: delete of missing %s/%s", ev.ID, ev.DID, path)
			}
			delete(m, path)
		default:
			return nil, fmt.Errorf("event %d: unknown action %v", ev.ID, ev.Action)
		}
	}
	return out, nil
}

// Records returns the records stored for did: path → CID. A record stored
// without its value is an error.
func Records(ctx context.Context, st store.Store, did string) (map[string]string, error) {
	out := map[string]string{}
	err := st.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanRecords(store.RecordScan{DID: did, WithValues: true}, func(r *store.Record) (bool, error) {
			c, err := cid.Cast(r.CID)
			if err != nil {
				return false, err
			}
			if len(r.Value) == 0 {
				return false, fmt.Errorf("record %s/%s/%s stored without value", did, r.Collection, r.RKey)
			}
			out[r.Collection+"/"+r.RKey] = c.String()
			return true, nil
		})
	})
	return out, err
}

// Want returns the account's records of the collections keep accepts:
// path → CID.
func Want(a *testnet.Account, keep func(collection string) bool) map[string]string {
	out := map[string]string{}
	for _, r := range a.Records() {
		if keep(r.Collection) {
			out[r.Path()] = r.CID.String()
		}
	}
	return out
}

// Diff says how got differs from want, "" when they are equal; long lists
// are cut.
func Diff(got, want map[string]string) string {
	var lines []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			lines = append(lines, "missing "+k)
		} else if g != w {
			lines = append(lines, "wrong CID "+k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			lines = append(lines, "extra "+k)
		}
	}
	sort.Strings(lines)
	if len(lines) > 8 {
		lines = append(lines[:8], fmt.Sprintf("... %d more", len(lines)-8))
	}
	return strings.Join(lines, "; ")
}
