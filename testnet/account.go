package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
)

// Status is an account's hosting status, as reported by getRepoStatus and
// #account frames.
type Status string

// The account statuses.
const (
	StatusActive      Status = "active"
	StatusDeactivated Status = "deactivated"
	StatusTakendown   Status = "takendown"
	StatusSuspended   Status = "suspended"
	StatusDeleted     Status = "deleted"
)

var (
	// ErrRecordExists is returned when a create names a record that exists.
	ErrRecordExists = errors.New("testnet: record already exists")
	// ErrRecordNotFound is returned when an update or delete names a record
	// that does not exist.
	ErrRecordNotFound = errors.New("testnet: record not found")
	// ErrInactive is returned when writing to an account that is not active.
	ErrInactive = errors.New("testnet: account is not active")
	// ErrInvalidOp is returned for ops with a bad collection, rkey, action
	// or value, or two ops on the same path.
	ErrInvalidOp = errors.New("testnet: invalid op")
)

// Account is one repo hosted on a Host: a DID, a handle, a K-256 signing key
// and a signed MST repo. All methods are safe for concurrent use; writes to
// one account are serialised and reach the relay in commit order.
type Account struct {
	net  *Network
	host *Host
	did  syntax.DID
	// movedTo is the host the account moved to (MoveTo), if it did.
	movedTo atomic.Pointer[Host]

	mu          sync.Mutex
	key         *atcrypto.PrivateKeyK256
	pub         atcrypto.PublicKey
	handle      syntax.Handle
	status      Status
	tree        *mst.Tree // loaded lazily from blocks (bulk accounts)
	blocks      *blockMap // commit, MST nodes and records of the current state, plus garbage
	live        int       // number of blocks at the last collection
	commit      repo.Commit
	commitCID   cid.Cid
	commitBytes []byte
	prevRev     string // rev of the commit before the current one
	clock       syntax.TIDClock
	collections map[string]int
	nrecords    int
}

// DID returns the account's DID (did:plc).
func (a *Account) DID() syntax.DID { return a.did }

// Host returns the PDS host of the account.
func (a *Account) Host() *Host {
	if h := a.movedTo.Load(); h != nil {
		return h
	}
	return a.host
}

// PublicKey returns the key that verifies the account's commits.
func (a *Account) PublicKey() atcrypto.PublicKey {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pub
}

// PrivateKey returns the account's signing key.
func (a *Account) PrivateKey() atcrypto.PrivateKey {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.key
}

// RotateKey gives the account a new signing key, as a PLC operation does:
// the PLC directory serves the new key at once, and the commits that follow
// are signed with it. It emits an #identity frame, as a PDS does, and
// returns its sequence number.
func (a *Account) RotateKey() (int64, error) {
	_, key, err := identityFromSeed(a.net.newSeed())
	if err != nil {
		return 0, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return 0, fmt.Errorf("testnet: public key: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.key, a.pub = key, pub
	return a.emitIdentityLocked()
}

// Handle returns the account's current handle.
func (a *Account) Handle() syntax.Handle {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.handle
}

// Status returns the account's hosting status.
func (a *Account) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Rev returns the rev of the account's current commit.
func (a *Account) Rev() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.commit.Rev
}

// DataCID returns the MST root CID of the current commit.
func (a *Account) DataCID() cid.Cid {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.commit.Data
}

// CommitCID returns the CID of the current signed commit.
func (a *Account) CommitCID() cid.Cid {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.commitCID
}

// Len returns the number of records in the repo.
func (a *Account) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nrecords
}

// Collections returns the collections that hold at least one record, sorted.
func (a *Account) Collections() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.collectionsLocked()
}

func (a *Account) collectionsLocked() []string {
	out := make([]string, 0, len(a.collections))
	for c := range a.collections {
		out = append(out, c)
	}
	sortStrings(out)
	return out
}

// Records returns the current records in MST order (collection, then rkey).
func (a *Account) Records() []Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Record, 0, a.nrecords)
	_ = walkMST(a.blocks, a.commit.Data, nil, func(key []byte, val cid.Cid) error {
		coll, rkey := splitPath(string(key))
		out = append(out, Record{Collection: coll, RKey: rkey, CID: val, Value: a.blocks.m[val]})
		return nil
	})
	return out
}

// Record returns the record at collection/rkey, if it exists.
func (a *Account) Record(collection, rkey string) (Record, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.recordLocked(collection, rkey)
}

func (a *Account) recordLocked(collection, rkey string) (Record, bool) {
	path := collection + "/" + rkey
	if !mst.IsValidKey([]byte(path)) {
		return Record{}, false
	}
	var found *cid.Cid
	if a.tree != nil {
		c, err := a.tree.Get([]byte(path))
		if err != nil || c == nil {
			return Record{}, false
		}
		found = c
	} else {
		c, err := getMST(a.blocks, a.commit.Data, []byte(path))
		if err != nil || c == nil {
			return Record{}, false
		}
		found = c
	}
	return Record{Collection: collection, RKey: rkey, CID: *found, Value: a.blocks.m[*found]}, true
}

// DIDDocument returns the account's DID document as the PLC directory
// serves it.
func (a *Account) DIDDocument() identity.DIDDocument {
	a.mu.Lock()
	h, pub := a.handle, a.pub
	a.mu.Unlock()
	return identity.DIDDocument{
		DID:         a.did,
		AlsoKnownAs: []string{"at://" + h.String()},
		VerificationMethod: []identity.DocVerificationMethod{{
			ID:                 a.did.String() + "#atproto",
			Type:               "Multikey",
			Controller:         a.did.String(),
			PublicKeyMultibase: pub.Multibase(),
		}},
		Service: []identity.DocService{{
			ID:              "#atproto_pds",
			Type:            "AtprotoPersonalDataServer",
			ServiceEndpoint: a.Host().URL(),
		}},
	}
}

// Identity returns the account's identity as indigo's directory would
// resolve it (handle verified).
func (a *Account) Identity() *identity.Identity {
	doc := a.DIDDocument()
	id := identity.ParseIdentity(&doc)
	id.Handle = a.Handle()
	return &id
}

// CAR returns the whole repo as com.atproto.sync.getRepo serves it.
func (a *Account) CAR() ([]byte, error) {
	var buf bytes.Buffer
	root, blks := a.snapshot()
	if err := writeCAR(&buf, root, blks); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// snapshot collects the blocks of the current state: the commit first, then
// MST nodes and records in tree order.
func (a *Account) snapshot() (cid.Cid, []carBlock) {
	a.mu.Lock()
	defer a.mu.Unlock()
	blks := make([]carBlock, 0, 2*a.nrecords+2)
	blks = append(blks, carBlock{a.commitCID, a.commitBytes})
	seen := make(map[cid.Cid]struct{}, a.nrecords)
	_ = walkMST(a.blocks, a.commit.Data, func(c cid.Cid, data []byte) {
		blks = append(blks, carBlock{c, data})
	}, func(_ []byte, val cid.Cid) error {
		if _, ok := seen[val]; !ok {
			seen[val] = struct{}{}
			blks = append(blks, carBlock{val, a.blocks.m[val]})
		}
		return nil
	})
	return a.commitCID, blks
}

// Commit describes one applied commit.
type Commit struct {
	// Seq is the relay sequence number of the #commit frame.
	Seq int64
	// Rev, CID and Data are the new commit's rev, CID and MST root.
	Rev  string
	CID  cid.Cid
	Data cid.Cid
	// PrevData is the MST root before the commit.
	PrevData cid.Cid
	// Ops are the applied ops in the order given.
	Ops []RecordOp
	// Frame is the #commit message as emitted on the firehose (corrupted
	// when the commit was applied with a Fault).
	Frame *comatproto.SyncSubscribeRepos_Commit
}

// Apply applies ops in one signed commit and emits it as a #commit frame.
// Creates with an empty RKey get a fresh TID. It fails without changing
// anything if an op is invalid, creates an existing record, or updates or
// deletes a missing one. Any number of ops is accepted (more than 200 makes
// an oversized commit, which indexers should reject).
func (a *Account) Apply(ops ...Op) (*Commit, error) {
	return a.apply(FaultNone, ops)
}

// ApplyFaulty applies ops like Apply, so that the account's real repo (what
// getRepo serves) advances normally, but emits a #commit frame corrupted by
// fault. An indexer that rejects the frame and resyncs from getRepo reaches
// the true state.
func (a *Account) ApplyFaulty(fault Fault, ops ...Op) (*Commit, error) {
	return a.apply(fault, ops)
}

// CreateRecord creates one record with a fresh TID rkey.
func (a *Account) CreateRecord(collection string, value []byte) (Record, error) {
	c, err := a.Apply(Create(collection, "", value))
	if err != nil {
		return Record{}, err
	}
	return Record{Collection: collection, RKey: c.Ops[0].RKey, CID: c.Ops[0].CID, Value: value}, nil
}

// PutRecord creates or updates the record at collection/rkey.
func (a *Account) PutRecord(collection, rkey string, value []byte) (Record, error) {
	op := Create(collection, rkey, value)
	if _, ok := a.Record(collection, rkey); ok {
		op.Action = ActionUpdate
	}
	c, err := a.Apply(op)
	if err != nil {
		return Record{}, err
	}
	return Record{Collection: collection, RKey: rkey, CID: c.Ops[0].CID, Value: value}, nil
}

// DeleteRecord deletes the record at collection/rkey.
func (a *Account) DeleteRecord(collection, rkey string) error {
	_, err := a.Apply(Delete(collection, rkey))
	return err
}

// CreatePosts creates n Post records in collection with TID rkeys, in
// commits of at most 200 ops, and returns them.
func (a *Account) CreatePosts(collection string, n int) ([]Record, error) {
	out := make([]Record, 0, n)
	for n > 0 {
		k := min(n, 200)
		ops := make([]Op, k)
		for i := range ops {
			ops[i] = Create(collection, "", Post(collection, fmt.Sprintf("post %d", len(out)+i)))
		}
		c, err := a.Apply(ops...)
		if err != nil {
			return out, err
		}
		for i, op := range c.Ops {
			out = append(out, Record{Collection: op.Collection, RKey: op.RKey, CID: op.CID, Value: ops[i].Value})
		}
		n -= k
	}
	return out, nil
}

func (a *Account) loadTreeLocked() error {
	if a.tree != nil {
		return nil
	}
	t, err := mst.LoadTreeFromStore(context.Background(), a.blocks, a.commit.Data)
	if err != nil {
		return fmt.Errorf("testnet: load MST of %s: %w", a.did, err)
	}
	a.tree = t
	return nil
}

func (a *Account) apply(fault Fault, ops []Op) (*Commit, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status != StatusActive {
		return nil, fmt.Errorf("%w: %s is %s", ErrInactive, a.did, a.status)
	}
	// Validate everything before touching the tree.
	seen := make(map[string]struct{}, len(ops))
	ops = append([]Op(nil), ops...)
	for i := range ops {
		op := &ops[i]
		if _, err := syntax.ParseNSID(op.Collection); err != nil {
			return nil, fmt.Errorf("%w: collection %q: %v", ErrInvalidOp, op.Collection, err)
		}
		if op.RKey == "" && op.Action == ActionCreate {
			op.RKey = a.net.nextTID().String()
		}
		if _, err := syntax.ParseRecordKey(op.RKey); err != nil {
			return nil, fmt.Errorf("%w: rkey %q: %v", ErrInvalidOp, op.RKey, err)
		}
		path := op.Collection + "/" + op.RKey
		if _, dup := seen[path]; dup {
			return nil, fmt.Errorf("%w: two ops on %s", ErrInvalidOp, path)
		}
		seen[path] = struct{}{}
		_, exists := a.recordLocked(op.Collection, op.RKey)
		switch op.Action {
		case ActionCreate:
			if exists {
				return nil, fmt.Errorf("%w: %s", ErrRecordExists, path)
			}
		case ActionUpdate, ActionDelete:
			if !exists {
				return nil, fmt.Errorf("%w: %s", ErrRecordNotFound, path)
			}
		default:
			return nil, fmt.Errorf("%w: action %q", ErrInvalidOp, op.Action)
		}
		if op.Action != ActionDelete {
			if len(op.Value) == 0 || op.Value[0]&0xe0 != 0xa0 {
				return nil, fmt.Errorf("%w: %s: value is not a DAG-CBOR map", ErrInvalidOp, path)
			}
		}
	}
	if err := a.loadTreeLocked(); err != nil {
		return nil, err
	}

	prevData := a.commit.Data
	diff := newBlockMap(2 * len(ops))
	out := &Commit{PrevData: prevData, Ops: make([]RecordOp, len(ops))}
	for i, op := range ops {
		path := []byte(op.Collection + "/" + op.RKey)
		rop := RecordOp{Action: op.Action, Collection: op.Collection, RKey: op.RKey}
		var prev *cid.Cid
		var err error
		if op.Action == ActionDelete {
			prev, err = a.tree.Remove(path)
			a.collections[op.Collection]--
			if a.collections[op.Collection] == 0 {
				delete(a.collections, op.Collection)
			}
			a.nrecords--
		} else {
			c := cborCID(op.Value)
			rop.CID = c
			a.blocks.put(c, op.Value)
			diff.put(c, op.Value)
			prev, err = a.tree.Insert(path, c)
			if op.Action == ActionCreate {
				a.collections[op.Collection]++
				a.nrecords++
			}
		}
		if err != nil {
			// The tree may be half-modified: reload it from the last
			// good state. Validation above makes this unreachable.
			a.tree = nil
			return nil, fmt.Errorf("testnet: apply %s: %w", path, err)
		}
		if prev != nil {
			rop.Prev = *prev
		}
		out.Ops[i] = rop
	}
	// WriteDiffBlocks before anything that computes the root: RootCID
	// clears the dirty flags the diff depends on.
	root, err := a.tree.WriteDiffBlocks(context.Background(), diff)
	if err != nil {
		a.tree = nil
		return nil, fmt.Errorf("testnet: write MST diff: %w", err)
	}
	for c, data := range diff.m {
		a.blocks.put(c, data)
	}
	if err := a.commitLocked(*root); err != nil {
		return nil, err
	}
	out.Rev, out.CID, out.Data = a.commit.Rev, a.commitCID, a.commit.Data

	// The frame's blocks: the signed commit (root), the new MST nodes
	// (which include the nodes needed to invert the ops) and new records.
	blks := make([]carBlock, 0, len(diff.order)+1)
	blks = append(blks, carBlock{a.commitCID, a.commitBytes})
	for _, c := range diff.order {
		blks = append(blks, carBlock{c, diff.m[c]})
	}
	var car bytes.Buffer
	if err := writeCAR(&car, a.commitCID, blks); err != nil {
		return nil, err
	}
	frame := &comatproto.SyncSubscribeRepos_Commit{
		Blobs:  []lexutil.LexLink{},
		Blocks: car.Bytes(),
		Commit: lexutil.LexLink(a.commitCID),
		Ops:    make([]*comatproto.SyncSubscribeRepos_RepoOp, len(out.Ops)),
		Repo:   a.did.String(),
		Rev:    a.commit.Rev,
		Time:   syntax.DatetimeNow().String(),
	}
	if prevData.Defined() {
		pd := lexutil.LexLink(prevData)
		frame.PrevData = &pd
	}
	if a.prevRev != "" {
		s := a.prevRev
		frame.Since = &s
	}
	for i, op := range out.Ops {
		fop := &comatproto.SyncSubscribeRepos_RepoOp{Action: string(op.Action), Path: op.Path()}
		if op.CID.Defined() {
			l := lexutil.LexLink(op.CID)
			fop.Cid = &l
		}
		if op.Prev.Defined() {
			l := lexutil.LexLink(op.Prev)
			fop.Prev = &l
		}
		frame.Ops[i] = fop
	}
	if fault != FaultNone {
		if err := a.corrupt(fault, frame, blks); err != nil {
			return nil, err
		}
	}
	out.Frame = frame
	seq, err := a.net.relay.emit("#commit", func(s int64) { frame.Seq = s }, frame)
	if err != nil {
		return nil, err
	}
	out.Seq = seq
	a.collectGarbageLocked()
	return out, nil
}

// commitLocked signs a new commit over data and makes it current.
func (a *Account) commitLocked(data cid.Cid) error {
	a.prevRev = a.commit.Rev
	c := repo.Commit{
		DID:     a.did.String(),
		Version: repo.ATPROTO_REPO_VERSION,
		Data:    data,
		Rev:     a.clock.Next().String(),
	}
	raw, cc, err := signCommit(&c, a.key)
	if err != nil {
		return err
	}
	delete(a.blocks.m, a.commitCID)
	a.commit, a.commitCID, a.commitBytes = c, cc, raw
	return nil
}

func signCommit(c *repo.Commit, key atcrypto.PrivateKey) ([]byte, cid.Cid, error) {
	if err := c.Sign(key); err != nil {
		return nil, cid.Undef, fmt.Errorf("testnet: sign commit: %w", err)
	}
	var buf bytes.Buffer
	if err := c.MarshalCBOR(&buf); err != nil {
		return nil, cid.Undef, fmt.Errorf("testnet: encode commit: %w", err)
	}
	return buf.Bytes(), cborCID(buf.Bytes()), nil
}

// collectGarbageLocked drops blocks no longer reachable from the current
// commit once garbage outweighs the live blocks.
func (a *Account) collectGarbageLocked() {
	if len(a.blocks.m) < 2*a.live+1024 {
		return
	}
	keep := newBlockMap(len(a.blocks.m))
	_ = walkMST(a.blocks, a.commit.Data, func(c cid.Cid, data []byte) {
		keep.put(c, data)
	}, func(_ []byte, val cid.Cid) error {
		keep.put(val, a.blocks.m[val])
		return nil
	})
	keep.order = nil
	a.blocks = keep
	a.live = len(keep.m)
}

// emitSyncLocked emits a #sync frame for the current commit.
func (a *Account) emitSyncLocked() (int64, error) {
	return a.emitSyncFrameLocked(carBlock{a.commitCID, a.commitBytes}, a.commit.Rev)
}

// emitSyncFrameLocked emits a #sync frame of rev whose CAR holds commit.
func (a *Account) emitSyncFrameLocked(commit carBlock, rev string) (int64, error) {
	var car bytes.Buffer
	if err := writeCAR(&car, commit.cid, []carBlock{commit}); err != nil {
		return 0, err
	}
	msg := &comatproto.SyncSubscribeRepos_Sync{
		Blocks: car.Bytes(),
		Did:    a.did.String(),
		Rev:    rev,
		Time:   syntax.DatetimeNow().String(),
	}
	return a.net.relay.emit("#sync", func(s int64) { msg.Seq = s }, msg)
}

// EmitSync emits a #sync frame announcing the current commit, as a PDS does
// after a repo import or to force consumers to resync. It returns the frame's
// sequence number.
func (a *Account) EmitSync() (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.emitSyncLocked()
}

func (a *Account) emitIdentityLocked() (int64, error) {
	h := a.handle.String()
	msg := &comatproto.SyncSubscribeRepos_Identity{Did: a.did.String(), Handle: &h, Time: syntax.DatetimeNow().String()}
	return a.net.relay.emit("#identity", func(s int64) { msg.Seq = s }, msg)
}

func (a *Account) emitAccountLocked() (int64, error) {
	msg := &comatproto.SyncSubscribeRepos_Account{
		Did:    a.did.String(),
		Active: a.status == StatusActive,
		Time:   syntax.DatetimeNow().String(),
	}
	if a.status != StatusActive {
		s := string(a.status)
		msg.Status = &s
	}
	return a.net.relay.emit("#account", func(s int64) { msg.Seq = s }, msg)
}

// SetHandle changes the account's handle (the DID document follows) and
// emits an #identity frame. It returns the frame's sequence number.
func (a *Account) SetHandle(handle string) (int64, error) {
	h, err := syntax.ParseHandle(handle)
	if err != nil {
		return 0, fmt.Errorf("testnet: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handle = h.Normalize()
	return a.emitIdentityLocked()
}

// EmitIdentity emits an #identity frame without changing anything, as a PDS
// does when a DID document may have changed.
func (a *Account) EmitIdentity() (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.emitIdentityLocked()
}

func (a *Account) setStatus(s Status) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status == StatusDeleted {
		return 0, fmt.Errorf("%w: %s is deleted", ErrInactive, a.did)
	}
	a.status = s
	return a.emitAccountLocked()
}

// Deactivate marks the account deactivated (getRepo answers RepoDeactivated)
// and emits #account {active: false, status: "deactivated"}.
func (a *Account) Deactivate() (int64, error) { return a.setStatus(StatusDeactivated) }

// Activate makes the account active again (reactivation, or reversal of a
// takedown or suspension) and emits #account {active: true}.
func (a *Account) Activate() (int64, error) { return a.setStatus(StatusActive) }

// Takedown marks the account taken down and emits #account
// {active: false, status: "takendown"}. Reverse it with Activate.
func (a *Account) Takedown() (int64, error) { return a.setStatus(StatusTakendown) }

// Suspend marks the account suspended and emits #account
// {active: false, status: "suspended"}. Reverse it with Activate.
func (a *Account) Suspend() (int64, error) { return a.setStatus(StatusSuspended) }

// Delete deletes the account: its repo is gone (getRepo answers
// RepoNotFound, listRepos omits it) and #account {active: false, status:
// "deleted"} is emitted. A deleted account cannot be revived.
func (a *Account) Delete() (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status == StatusDeleted {
		return 0, fmt.Errorf("%w: %s is already deleted", ErrInactive, a.did)
	}
	a.status = StatusDeleted
	return a.emitAccountLocked()
}

func splitPath(p string) (string, string) {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			return p[:i], p[i+1:]
		}
	}
	return p, ""
}
