package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
)

// convergeTimeout bounds how long a check waits for cistern to settle.
const convergeTimeout = 60 * time.Second

// event is one event of cistern's log, whatever it came through (the
// library's Subscribe or the HTTP /stream).
type event struct {
	ID         uint64
	Kind       string // record, identity, account
	Live       bool
	DID        string
	Rev        string
	Collection string
	RKey       string
	Action     string // create, update, delete
	CID        string
	Value      json.RawMessage
	Handle     string
	Active     bool
	Status     string
}

func (e *event) uri() string { return "at://" + e.DID + "/" + e.Collection + "/" + e.RKey }

func (e *event) String() string {
	switch e.Kind {
	case "record":
		return fmt.Sprintf("#%d %s %s cid=%s rev=%s live=%v", e.ID, e.Action, e.uri(), e.CID, e.Rev, e.Live)
	case "identity":
		return fmt.Sprintf("#%d identity %s handle=%s", e.ID, e.DID, e.Handle)
	}
	return fmt.Sprintf("#%d account %s active=%v status=%q", e.ID, e.DID, e.Active, e.Status)
}

// repoView is a repo's state as cistern reports it.
type repoView struct {
	State  string // "synced", "deactivated", ...
	Status string
	Handle string
	Rev    string
	// handleUnknown says the replica cannot resolve handles (Handle is
	// then not compared).
	handleUnknown bool
}

// replica is what one cistern answers: through the library, or through
// the HTTP side of the examples/cistern binary.
type replica interface {
	// records lists every record of a collection of a repo (listRecords,
	// all pages).
	records(ctx context.Context, did, collection string) ([]xrecord, error)
	// record reads one record (getRecord); nil when absent.
	record(ctx context.Context, did, collection, rkey string) (*xrecord, error)
	// collections lists the collections cistern holds records of for a
	// repo; nil if the replica cannot tell.
	collections(ctx context.Context, did string) ([]string, error)
	// repo returns the repo's state; nil when not tracked; errNoRepoView
	// if the replica cannot tell.
	repo(ctx context.Context, did string) (*repoView, error)
	// events returns the whole event log, in the order delivered.
	events(ctx context.Context) ([]*event, error)
}

var errNoRepoView = fmt.Errorf("replica does not report repo state")

// fold is the event log folded in id order.
type fold struct {
	records   map[string]*event // uri → last create/update event
	seen      map[string]bool   // every record uri ever mentioned
	handles   map[string]string // did → handle of the last identity event
	accounts  map[string]*event // did → last account event
	dids      map[string]bool   // every DID with an event
	anomalies []string          // what breaks "nothing lost, nothing doubled"
	byRev     map[string][]*event
	n         int
	last      uint64 // id of the last event
}

// foldEvents folds events in delivery order, strictly: ids must increase,
// a create must be of an absent record, an update of a present one with a
// new CID, a delete of a present one. Any other event is an anomaly (an
// event doubled, a delete lost before it, or a no-op emitted).
func foldEvents(evs []*event) *fold {
	f := &fold{records: map[string]*event{}, seen: map[string]bool{}, handles: map[string]string{},
		accounts: map[string]*event{}, dids: map[string]bool{}, byRev: map[string][]*event{}}
	var last uint64
	for _, ev := range evs {
		f.n++
		if ev.ID <= last {
			f.anomalies = append(f.anomalies, fmt.Sprintf("event %s after id %d: ids not increasing", ev, last))
		}
		last = ev.ID
		f.last = ev.ID
		f.dids[ev.DID] = true
		switch ev.Kind {
		case "identity":
			f.handles[ev.DID] = ev.Handle
		case "account":
			f.accounts[ev.DID] = ev
		case "repo":
			// a failed sync attempt, retried: no change to the data
		case "record":
			u := ev.uri()
			f.seen[u] = true
			f.byRev[ev.DID+" "+ev.Rev] = append(f.byRev[ev.DID+" "+ev.Rev], ev)
			prev := f.records[u]
			switch ev.Action {
			case "create":
				if prev != nil {
					f.anomalies = append(f.anomalies, fmt.Sprintf("event %s: create of a record already present (from %s)", ev, prev))
				}
				f.records[u] = ev
			case "update":
				if prev == nil {
					f.anomalies = append(f.anomalies, fmt.Sprintf("event %s: update of an absent record", ev))
				} else if prev.CID == ev.CID {
					f.anomalies = append(f.anomalies, fmt.Sprintf("event %s: update to the CID it already had (from %s)", ev, prev))
				}
				f.records[u] = ev
			case "delete":
				if prev == nil {
					f.anomalies = append(f.anomalies, fmt.Sprintf("event %s: delete of an absent record", ev))
				}
				delete(f.records, u)
			default:
				f.anomalies = append(f.anomalies, fmt.Sprintf("event %s: unknown action", ev))
			}
		default:
			f.anomalies = append(f.anomalies, fmt.Sprintf("event %s: unknown kind %q", ev, ev.Kind))
		}
	}
	return f
}

// recordsOf returns the folded records of one repo.
func (f *fold) recordsOf(did string) map[string]*event {
	out := map[string]*event{}
	prefix := "at://" + did + "/"
	for u, ev := range f.records {
		if strings.HasPrefix(u, prefix) {
			out[u] = ev
		}
	}
	return out
}

// seenOf returns every record uri of one repo the log mentioned.
func (f *fold) seenOf(did string) []string {
	var out []string
	prefix := "at://" + did + "/"
	for u := range f.seen {
		if strings.HasPrefix(u, prefix) {
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}

// expected is what the reference network says about one repo.
type expected struct {
	DID     string
	Status  *repoStatus // nil when the PDS no longer has the repo
	Handle  string      // from the PLC directory
	Records map[string]xrecord
	Colls   []string // collections of Records' repo the filter stores
}

// expect reads one repo's truth from the PDS and the PLC directory; the
// records are those of the collections filt stores.
func expect(ctx context.Context, n *network, filt *filter.Filter, did string) (*expected, error) {
	pds := newXRPC(n.PDS)
	e := &expected{DID: did, Records: map[string]xrecord{}}
	st, err := pds.getRepoStatus(ctx, did)
	switch {
	case isXRPCError(err, "RepoNotFound"):
		return e, nil
	case err != nil:
		return nil, err
	}
	e.Status = st
	if e.Handle, err = plcHandle(ctx, n.PLC, did); err != nil {
		return nil, err
	}
	if !st.Active {
		return e, nil // the PDS serves no records of an inactive repo
	}
	desc, err := pds.describeRepo(ctx, did)
	if err != nil {
		return nil, err
	}
	for _, c := range desc.Collections {
		if !filt.Stores(c) {
			continue
		}
		e.Colls = append(e.Colls, c)
		recs, err := pds.listRecords(ctx, did, c)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			e.Records[r.URI] = r
		}
	}
	return e, nil
}

// sameJSON reports whether two JSON texts hold the same value.
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}

// diffRepo lists how a replica and its folded log differ from the truth
// about one repo; nothing when they agree.
func diffRepo(ctx context.Context, exp *expected, r replica, f *fold) ([]string, error) {
	var d []string
	did := exp.DID
	rv, err := r.repo(ctx, did)
	hasView := err == nil
	if err != nil && err != errNoRepoView {
		return nil, err
	}
	folded := f.recordsOf(did)

	if exp.Status == nil { // deleted at the PDS
		if hasView && rv != nil && rv.State != "deleted" {
			d = append(d, fmt.Sprintf("%s: state %q, want deleted (PDS: RepoNotFound)", did, rv.State))
		}
		if hasView && rv != nil {
			// The deletion ends with its account event (the state says
			// deleted from its start).
			if ev := f.accounts[did]; ev == nil || ev.Active || ev.Status != "deleted" {
				d = append(d, fmt.Sprintf("%s: last account event %+v, want the deletion", did, ev))
			}
		}
		for u := range folded {
			d = append(d, fmt.Sprintf("%s: folded log still holds %s after the account was deleted", did, u))
		}
		for _, u := range f.seenOf(did) {
			if err := checkAbsent(ctx, r, u); err != nil {
				d = append(d, err.Error())
			}
		}
		colls, err := r.collections(ctx, did)
		if err != nil {
			return nil, err
		}
		if len(colls) > 0 {
			d = append(d, fmt.Sprintf("%s: cistern holds collections %v of a deleted account", did, colls))
		}
		return d, nil
	}

	st := exp.Status
	if hasView {
		switch {
		case rv == nil:
			d = append(d, fmt.Sprintf("%s: not tracked", did))
		case st.Active:
			if rv.State != "synced" {
				d = append(d, fmt.Sprintf("%s: state %q, want synced (PDS active)", did, rv.State))
			}
			if rv.Status != "" {
				d = append(d, fmt.Sprintf("%s: status %q, want \"\" (PDS active)", did, rv.Status))
			}
			if rv.Rev != st.Rev {
				d = append(d, fmt.Sprintf("%s: rev %q, PDS rev %q", did, rv.Rev, st.Rev))
			}
		default:
			if rv.State != st.Status || rv.Status != st.Status {
				d = append(d, fmt.Sprintf("%s: state %q status %q, want %q (PDS getRepoStatus)", did, rv.State, rv.Status, st.Status))
			}
		}
		if rv != nil && !rv.handleUnknown && rv.Handle != exp.Handle {
			d = append(d, fmt.Sprintf("%s: handle %q, PLC says %q", did, rv.Handle, exp.Handle))
		}
	}
	// A view that cannot resolve handles emits "handle.invalid" in the
	// identity events of its handle checks: only the handle it could not
	// know differs.
	if h, ok := f.handles[did]; ok && h != exp.Handle && !(rv != nil && rv.handleUnknown && h == "handle.invalid") {
		d = append(d, fmt.Sprintf("%s: last identity event says handle %q, PLC says %q", did, h, exp.Handle))
	}
	if ev := f.accounts[did]; ev != nil {
		if ev.Active != st.Active || (!st.Active && ev.Status != st.Status) {
			d = append(d, fmt.Sprintf("%s: last account event %s, PDS active=%v status=%q", did, ev, st.Active, st.Status))
		}
	} else if !st.Active {
		d = append(d, fmt.Sprintf("%s: no account event, PDS active=false status=%q", did, st.Status))
	}
	if !st.Active {
		return d, nil
	}

	// Records: listRecords over every collection either side knows of.
	colls := map[string]bool{}
	for _, c := range exp.Colls {
		colls[c] = true
	}
	held, err := r.collections(ctx, did)
	if err != nil {
		return nil, err
	}
	for _, c := range held {
		colls[c] = true
	}
	for _, ev := range folded {
		colls[ev.Collection] = true
	}
	got := map[string]xrecord{}
	for c := range colls {
		recs, err := r.records(ctx, did, c)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			if _, dup := got[rec.URI]; dup {
				d = append(d, fmt.Sprintf("listRecords lists %s twice", rec.URI))
			}
			got[rec.URI] = rec
		}
	}
	d = append(d, diffRecords("listRecords", exp.Records, got)...)

	// getRecord: every expected record, and every record the log ever
	// mentioned that the PDS no longer has must be absent.
	for u, want := range exp.Records {
		coll, rkey := splitURI(u)
		rec, err := r.record(ctx, did, coll, rkey)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			d = append(d, fmt.Sprintf("getRecord %s: not found, PDS has cid %s", u, want.CID))
			continue
		}
		if rec.URI != want.URI || rec.CID != want.CID || !sameJSON(rec.Value, want.Value) {
			d = append(d, fmt.Sprintf("getRecord %s: got uri %s cid %s value %s, PDS has cid %s value %s", u, rec.URI, rec.CID, rec.Value, want.CID, want.Value))
		}
	}
	for _, u := range f.seenOf(did) {
		if _, ok := exp.Records[u]; ok {
			continue
		}
		if err := checkAbsent(ctx, r, u); err != nil {
			d = append(d, err.Error())
		}
	}

	// The folded log.
	fr := map[string]xrecord{}
	for u, ev := range folded {
		fr[u] = xrecord{URI: u, CID: ev.CID, Value: ev.Value}
	}
	d = append(d, diffRecords("folded log", exp.Records, fr)...)
	return d, nil
}

// checkAbsent says whether getRecord of uri answers not found.
func checkAbsent(ctx context.Context, r replica, u string) error {
	coll, rkey := splitURI(u)
	did := strings.TrimPrefix(u, "at://")
	did = did[:strings.IndexByte(did, '/')]
	rec, err := r.record(ctx, did, coll, rkey)
	if err != nil {
		return err
	}
	if rec != nil {
		return fmt.Errorf("getRecord %s: found cid %s, the PDS has no such record", u, rec.CID)
	}
	return nil
}

// diffRecords compares records by uri, CID and value.
func diffRecords(what string, want, got map[string]xrecord) []string {
	var d []string
	for u, w := range want {
		g, ok := got[u]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s: missing %s (PDS cid %s)", what, u, w.CID))
		case g.CID != w.CID:
			d = append(d, fmt.Sprintf("%s: %s has cid %s, PDS cid %s", what, u, g.CID, w.CID))
		case g.Value != nil && !sameJSON(g.Value, w.Value):
			d = append(d, fmt.Sprintf("%s: %s value %s, PDS value %s", what, u, g.Value, w.Value))
		}
	}
	for u, g := range got {
		if _, ok := want[u]; !ok {
			d = append(d, fmt.Sprintf("%s: extra %s (cid %s), absent at the PDS or filtered out", what, u, g.CID))
		}
	}
	sort.Strings(d)
	return d
}

func splitURI(u string) (collection, rkey string) {
	parts := strings.Split(strings.TrimPrefix(u, "at://"), "/")
	if len(parts) != 3 {
		return "", ""
	}
	return parts[1], parts[2]
}

// converged is the outcome of one comparison.
type converged struct {
	diffs []string
	fold  *fold
}

// compare checks every repo of dids once.
func compare(ctx context.Context, n *network, r replica, filt *filter.Filter, dids []string) (*converged, error) {
	evs, err := r.events(ctx)
	if err != nil {
		return nil, err
	}
	f := foldEvents(evs)
	out := &converged{fold: f}
	for _, did := range dids {
		exp, err := expect(ctx, n, filt, did)
		if err != nil {
			return nil, err
		}
		d, err := diffRepo(ctx, exp, r, f)
		if err != nil {
			return nil, err
		}
		out.diffs = append(out.diffs, d...)
	}
	if len(out.diffs) > 0 {
		return out, nil
	}
	// The state was read after the log: if the log moved meanwhile, the
	// two may not belong together (a repo's new handle without its
	// identity event, say); look again.
	again, err := r.events(ctx)
	if err != nil {
		return nil, err
	}
	if len(again) != len(evs) {
		out.diffs = append(out.diffs, fmt.Sprintf("event log moved during the comparison (%d events, then %d)", len(evs), len(again)))
	}
	return out, nil
}

// assertConverged waits (up to convergeTimeout) until the replica and its
// folded event log agree with the reference network about every repo of
// dids, and fails the test with the differences if they never do. The
// strict-fold anomalies fail it at once: they do not heal. It returns the
// fold of the last comparison.
func assertConverged(t testing.TB, n *network, r replica, filt *filter.Filter, dids ...string) *fold {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout+30*time.Second)
	defer cancel()
	deadline := time.Now().Add(convergeTimeout)
	var last *converged
	var lastErr error
	for {
		c, err := compare(ctx, n, r, filt, dids)
		if err == nil {
			if len(c.fold.anomalies) > 0 {
				t.Fatalf("event log is not a clean history (%d events):\n  %s", c.fold.n, strings.Join(limit(c.fold.anomalies, 30), "\n  "))
			}
			if len(c.diffs) == 0 {
				return c.fold
			}
			last = c
		}
		lastErr = err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("not converged after %s; last comparison failed: %v", convergeTimeout, lastErr)
	}
	t.Fatalf("not converged after %s: %d differences:\n  %s", convergeTimeout, len(last.diffs), strings.Join(limit(last.diffs, 40), "\n  "))
	return nil
}

func limit(ss []string, n int) []string {
	if len(ss) <= n {
		return ss
	}
	return append(ss[:n:n], fmt.Sprintf("... and %d more", len(ss)-n))
}

// eventually polls cond until it returns nil or the timeout passes, and
// fails the test with cond's last error.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
