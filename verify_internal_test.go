package cistern

import (
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/repo/mst"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

const testPost = "app.bsky.feed.post"

// innerRecord returns a record of a that shares its MST node with both of
// its neighbours, below the root: deleting it leaves that node in the new
// tree, and re-inserting it (what inverting the delete does) needs it.
func innerRecord(t *testing.T, a *testnet.Account) testnet.Record {
	t.Helper()
	recs := a.Records()
	height := func(r testnet.Record) int { return mst.HeightForKey([]byte(r.Path())) }
	top := 0
	for _, r := range recs {
		top = max(top, height(r))
	}
	if top == 0 {
		t.Fatal("the tree has one layer: no node below the root")
	}
	for i := 1; i+1 < len(recs); i++ {
		if height(recs[i-1]) == 0 && height(recs[i]) == 0 && height(recs[i+1]) == 0 {
			return recs[i]
		}
	}
	t.Fatal("no record shares a bottom-layer node with both neighbours")
	return testnet.Record{}
}

// TestLive_RejectsCommitsOnlyVerificationCatches feeds #commit frames that
// are wrong in ways only one check sees (prevData is right in all of them)
// and checks that each is rejected for its reason, counted, and that the
// repo is resynced to the PDS's state.
func TestLive_RejectsCommitsOnlyVerificationCatches(t *testing.T) {
	creates := func(n int) func(*testnet.Account) []testnet.Op {
		return func(*testnet.Account) []testnet.Op {
			ops := make([]testnet.Op, n)
			for i := range ops {
				ops[i] = testnet.Create(testPost, "", testnet.Post(testPost, "rejected"))
			}
			return ops
		}
	}
	cases := []struct {
		name   string
		fault  testnet.Fault
		ops    func(*testnet.Account) []testnet.Op
		reason RejectReason
	}{
		// The inversion: the ops left do not lead back to prevData.
		{"an op left out", testnet.FaultMissingOp, creates(2), RejectBrokenChain},
		// An op's CID (with its value in the CAR) that the tree does not hold.
		{"an op's CID not the tree's", testnet.FaultWrongOpCID, creates(1), RejectBadOps},
		// The inversion cannot re-insert the deleted key without its node.
		{"an MST node left out", testnet.FaultMissingBlock, func(a *testnet.Account) []testnet.Op {
			return []testnet.Op{testnet.Delete(testPost, innerRecord(t, a).RKey)}
		}, RejectBrokenChain},
		{"signed commit of another DID", testnet.FaultWrongCommitDID, creates(1), RejectCIDMismatch},
		{"signed commit of another rev", testnet.FaultWrongCommitRev, creates(1), RejectCIDMismatch},
		{"more than 200 ops", testnet.FaultNone, creates(MaxCommitOps + 1), RejectTooLarge},
		{"200 ops", testnet.FaultNone, creates(MaxCommitOps), ""},
	}
	net := testnet.New(t)
	accts := make([]*testnet.Account, len(cases))
	var dids []string
	for i := range cases {
		accts[i] = net.Account(t, fmt.Sprintf("reject%d.test", i))
		// Fixed rkeys: the tree's shape is the same every run.
		seed := make([]testnet.Op, 100)
		for j := range seed {
			seed[j] = testnet.Create(testPost, fmt.Sprintf("r%03d", j), testnet.Post(testPost, "seed"))
		}
		if _, err := accts[i].Apply(seed...); err != nil {
			t.Fatal(err)
		}
		dids = append(dids, accts[i].DID().String())
	}
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: dids}))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, did := accts[i], dids[i]
			if err := ix.WaitSynced(ctx, did); err != nil {
				t.Fatal(err)
			}
			before := rejectedAs(t, ctx, ix, tc.reason)
			c, err := a.ApplyFaulty(tc.fault, tc.ops(a)...)
			if err != nil {
				t.Fatal(err)
			}
			err = ix.ing.HandleMessage(ctx, "test", frameAt(t, net, c.Seq))
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("handleMessage = %v; want the commit applied", err)
				}
				unlock := ix.lock(did) // waits for the pipelined write
				r, err := ix.repos.Get(ctx, did)
				unlock()
				if err != nil || r.Rev != c.Rev {
					t.Fatalf("repo %+v (%v), want it at rev %s", r, err, c.Rev)
				}
				return
			}
			assertRejected(t, ctx, ix, a, err, tc.reason, before)
		})
	}
}

// TestHandleSync_RejectsBadCommits: a #sync whose signed commit does not
// verify, or names another DID or rev than the frame, is rejected and
// counted, and the repo resynced.
func TestHandleSync_RejectsBadCommits(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "badsync.test", testnet.Records(testPost, 3))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fault  testnet.Fault
		reason RejectReason
	}{
		{testnet.FaultBadSignature, RejectBadSignature},
		{testnet.FaultWrongCommitDID, RejectCIDMismatch},
		{testnet.FaultWrongCommitRev, RejectCIDMismatch},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			// The repo moves on unseen, so that the #sync is news.
			if _, err := a.CreateRecord(testPost, testnet.Post(testPost, "unseen")); err != nil {
				t.Fatal(err)
			}
			before := rejectedAs(t, ctx, ix, tc.reason)
			seq, err := a.EmitSyncFaulty(tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			err = ix.ing.HandleMessage(ctx, "test", frameAt(t, net, seq))
			assertRejected(t, ctx, ix, a, err, tc.reason, before)
		})
	}
}

// TestLive_KeyRotationResolvesOnce: after the account rotates its signing
// key (its #identity frame not seen), the first commit signed with the new
// key finds the cached key wrong, resolves the identity once and applies;
// the new key is saved, so the commits after it resolve nothing.
func TestLive_KeyRotationResolvesOnce(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "rotate.test", testnet.Records(testPost, 3))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateKey(); err != nil {
		t.Fatal(err)
	}
	msgs := commitFrames(t, net, a, 3, func(int) string { return "" })
	plc := net.PLCRequests()
	if err := ix.ing.HandleMessage(ctx, "test", msgs[0]); err != nil {
		t.Fatalf("first commit after the rotation: %v", err)
	}
	if n := net.PLCRequests() - plc; n != 1 {
		t.Fatalf("first commit after the rotation made %d PLC requests, want 1", n)
	}
	for _, m := range msgs[1:] {
		if err := ix.ing.HandleMessage(ctx, "test", m); err != nil {
			t.Fatalf("commit after the rotation: %v", err)
		}
	}
	if n := net.PLCRequests() - plc; n != 1 {
		t.Fatalf("three commits after the rotation made %d PLC requests, want 1: the new key was not kept", n)
	}
	unlock := ix.lock(did) // waits for the pipelined writes
	r, err := ix.repos.Get(ctx, did)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	if r.Rev != a.Rev() || r.SigningKey != a.PublicKey().Multibase() {
		t.Fatalf("repo at %s with key %s; PDS at %s with key %s", r.Rev, r.SigningKey, a.Rev(), a.PublicKey().Multibase())
	}
	st, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for reason, n := range st.Rejected {
		if n != 0 {
			t.Errorf("%d commits rejected as %s", n, reason)
		}
	}
}
