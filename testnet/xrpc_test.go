package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/repo"
)

func TestXRPCEndpoints(t *testing.T) {
	n := New(t)
	a := n.Account(t, "alice.test", Records("app.bsky.feed.post", 120), Records("app.bsky.feed.like", 3))
	b := n.Account(t, "bob.test")
	pds := n.PDSURL() + "/xrpc/"
	did := a.DID().String()

	t.Run("getRepoStatus", func(t *testing.T) {
		var st struct {
			DID    string `json:"did"`
			Active bool   `json:"active"`
			Rev    string `json:"rev"`
		}
		getJSON(t, pds+"com.atproto.sync.getRepoStatus?did="+did, &st)
		if st.DID != did || !st.Active || st.Rev != a.Rev() {
			t.Fatalf("%+v", st)
		}
	})
	t.Run("getLatestCommit", func(t *testing.T) {
		var c struct{ CID, Rev string }
		getJSON(t, pds+"com.atproto.sync.getLatestCommit?did="+did, &c)
		if c.CID != a.CommitCID().String() || c.Rev != a.Rev() {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("listRepos paged", func(t *testing.T) {
		var page struct {
			Cursor string `json:"cursor"`
			Repos  []struct {
				DID    string `json:"did"`
				Head   string `json:"head"`
				Active bool   `json:"active"`
			} `json:"repos"`
		}
		getJSON(t, pds+"com.atproto.sync.listRepos?limit=1", &page)
		first := page.Repos[0].DID
		if len(page.Repos) != 1 || page.Cursor != first {
			t.Fatalf("%+v", page)
		}
		getJSON(t, pds+"com.atproto.sync.listRepos?limit=1&cursor="+page.Cursor, &page)
		if len(page.Repos) != 1 || page.Repos[0].DID == first {
			t.Fatalf("%+v", page)
		}
		var rel struct {
			Repos []struct{ DID string } `json:"repos"`
		}
		getJSON(t, n.RelayURL()+"/xrpc/com.atproto.sync.listRepos", &rel)
		if len(rel.Repos) != 2 {
			t.Fatalf("relay listRepos %+v", rel)
		}
	})
	t.Run("listReposByCollection", func(t *testing.T) {
		var rel struct {
			Repos []struct{ DID string } `json:"repos"`
		}
		getJSON(t, n.RelayURL()+"/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.like", &rel)
		if len(rel.Repos) != 1 || rel.Repos[0].DID != did {
			t.Fatalf("%+v", rel)
		}
		if code, e := xrpcError(t, n.RelayURL()+"/xrpc/com.atproto.sync.listReposByCollection"); code != 400 || e != "InvalidRequest" {
			t.Fatalf("%d %s", code, e)
		}
	})
	t.Run("sync.getRecord", func(t *testing.T) {
		rec := a.Records()[5]
		code, _, car := get(t, pds+"com.atproto.sync.getRecord?did="+did+"&collection="+rec.Collection+"&rkey="+rec.RKey)
		if code != 200 {
			t.Fatalf("%d", code)
		}
		commit, r, err := repo.LoadRepoFromCAR(context.Background(), bytes.NewReader(car))
		mustNoErr(t, err)
		mustNoErr(t, commit.VerifySignature(a.PublicKey()))
		got, _, err := r.GetRecordBytes(context.Background(), "app.bsky.feed.like", syntaxRKey(rec.RKey))
		if rec.Collection == "app.bsky.feed.like" && (err != nil || !bytes.Equal(got, rec.Value)) {
			t.Fatalf("record not in proof: %v", err)
		}
		if code, e := xrpcError(t, pds+"com.atproto.sync.getRecord?did="+did+"&collection=app.bsky.feed.post&rkey=nope"); code != 404 || e != "RecordNotFound" {
			t.Fatalf("%d %s", code, e)
		}
	})
	t.Run("describeRepo", func(t *testing.T) {
		var d struct {
			Handle          string   `json:"handle"`
			DID             string   `json:"did"`
			Collections     []string `json:"collections"`
			HandleIsCorrect bool     `json:"handleIsCorrect"`
			DIDDoc          struct {
				ID string `json:"id"`
			} `json:"didDoc"`
		}
		getJSON(t, pds+"com.atproto.repo.describeRepo?repo=alice.test", &d)
		if d.DID != did || d.Handle != "alice.test" || !d.HandleIsCorrect || d.DIDDoc.ID != did ||
			len(d.Collections) != 2 || d.Collections[0] != "app.bsky.feed.like" {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("repo.getRecord", func(t *testing.T) {
		rec := a.Records()[10]
		var r struct {
			URI   string `json:"uri"`
			CID   string `json:"cid"`
			Value struct {
				Type string `json:"$type"`
				Text string `json:"text"`
			} `json:"value"`
		}
		getJSON(t, pds+"com.atproto.repo.getRecord?repo="+did+"&collection="+rec.Collection+"&rkey="+rec.RKey, &r)
		if r.URI != "at://"+did+"/"+rec.Path() || r.CID != rec.CID.String() || r.Value.Type != rec.Collection || r.Value.Text == "" {
			t.Fatalf("%+v", r)
		}
		if code, e := xrpcError(t, pds+"com.atproto.repo.getRecord?repo="+did+"&collection=app.bsky.feed.post&rkey=3zzzzzzzzzzzz"); code != 400 || e != "RecordNotFound" {
			t.Fatalf("%d %s", code, e)
		}
	})
	t.Run("listRecords", func(t *testing.T) {
		var all []string
		for _, r := range a.Records() {
			if r.Collection == "app.bsky.feed.post" {
				all = append(all, r.RKey)
			}
		}
		type page struct {
			Cursor  string `json:"cursor"`
			Records []struct {
				URI string `json:"uri"`
			} `json:"records"`
		}
		for _, reverse := range []bool{false, true} {
			var got []string
			cursor := ""
			for i := 0; i < 10; i++ {
				var p page
				u := pds + "com.atproto.repo.listRecords?repo=" + did + "&collection=app.bsky.feed.post&limit=50&reverse=" + strconv.FormatBool(reverse)
				if cursor != "" {
					u += "&cursor=" + cursor
				}
				getJSON(t, u, &p)
				for _, r := range p.Records {
					got = append(got, r.URI[len(r.URI)-13:])
				}
				if len(p.Records) == 0 || p.Cursor == "" {
					break
				}
				cursor = p.Cursor
			}
			if len(got) != len(all) {
				t.Fatalf("reverse=%v: %d records, want %d", reverse, len(got), len(all))
			}
			for i := range got {
				want := all[len(all)-1-i] // descending by default
				if reverse {
					want = all[i]
				}
				if got[i] != want {
					t.Fatalf("reverse=%v: record %d is %s, want %s", reverse, i, got[i], want)
				}
			}
		}
		var p page
		getJSON(t, pds+"com.atproto.repo.listRecords?repo="+did+"&collection=app.bsky.feed.post", &p)
		if len(p.Records) != 50 {
			t.Fatalf("default limit: %d", len(p.Records))
		}
		for _, bad := range []string{"0", "101", "x"} {
			if code, e := xrpcError(t, pds+"com.atproto.repo.listRecords?repo="+did+"&collection=app.bsky.feed.post&limit="+bad); code != 400 || e != "InvalidRequest" {
				t.Fatalf("limit=%s: %d %s", bad, code, e)
			}
		}
	})
	t.Run("account status errors", func(t *testing.T) {
		bd := b.DID().String()
		cases := []struct {
			change func() (int64, error)
			want   string
		}{
			{b.Deactivate, "RepoDeactivated"},
			{b.Takedown, "RepoTakendown"},
			{b.Suspend, "RepoSuspended"},
			{b.Delete, "RepoNotFound"},
		}
		for _, c := range cases {
			_, err := c.change()
			mustNoErr(t, err)
			for _, m := range []string{"com.atproto.sync.getRepo?did=", "com.atproto.sync.getLatestCommit?did=", "com.atproto.repo.describeRepo?repo="} {
				if code, e := xrpcError(t, pds+m+bd); code != 400 || e != c.want {
					t.Fatalf("%s after %s: %d %s", m, c.want, code, e)
				}
			}
			if c.want != "RepoNotFound" {
				var st struct {
					Active bool
					Status string
				}
				getJSON(t, pds+"com.atproto.sync.getRepoStatus?did="+bd, &st)
				if st.Active || "Repo"+capitalize(st.Status) != c.want {
					t.Fatalf("status %+v", st)
				}
				_, err := b.Activate()
				mustNoErr(t, err)
				if code, _, _ := get(t, pds+"com.atproto.sync.getRepo?did="+bd); code != 200 {
					t.Fatalf("getRepo after reactivation: %d", code)
				}
			}
		}
		if code, e := xrpcError(t, pds+"com.atproto.sync.getRepo?did=not-a-did"); code != 400 || e != "InvalidRequest" {
			t.Fatalf("%d %s", code, e)
		}
		if code, e := xrpcError(t, pds+"com.atproto.sync.getRepo?did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); code != 400 || e != "RepoNotFound" {
			t.Fatalf("%d %s", code, e)
		}
	})
	if n.Host(0).Requests("com.atproto.repo.listRecords") < 5 || n.Host(0).Requests("com.atproto.sync.getRepoStatus") == 0 {
		t.Fatalf("request counts %v", n.Host(0).RequestCounts())
	}
}

// getRecord and listRecords look a repo up as the reference PDS does
// (getDidForActor, which leaves out inactive accounts): an unknown repo, a
// repo of another host and every inactive account answer 400
// InvalidRequest with the reference's messages, while describeRepo keeps
// naming the account's status.
func TestXRPC_RecordMethodsOfUnknownAndInactiveRepos(t *testing.T) {
	n := New(t, WithHosts(2))
	a := n.Account(t, "alice.test", Records("app.bsky.feed.post", 3))
	elsewhere, err := n.Host(1).CreateAccount("elsewhere.test", Records("app.bsky.feed.post", 1))
	mustNoErr(t, err)
	pds := n.PDSURL() + "/xrpc/"
	rec := a.Records()[0]
	getRecord := func(repo string) string {
		return pds + "com.atproto.repo.getRecord?repo=" + repo + "&collection=" + rec.Collection + "&rkey=" + rec.RKey
	}
	listRecords := func(repo string) string {
		return pds + "com.atproto.repo.listRecords?repo=" + repo + "&collection=" + rec.Collection
	}
	notFound := func(when, repo string) {
		t.Helper()
		for _, c := range []struct{ u, msg string }{
			{getRecord(repo), "Could not locate record"},
			{listRecords(repo), "Could not find repo: " + repo},
		} {
			code, name, msg := xrpcErrorMessage(t, c.u)
			if code != http.StatusBadRequest || name != "InvalidRequest" || msg != c.msg {
				t.Fatalf("%s: GET %s: %d %s %q, want 400 InvalidRequest %q", when, c.u, code, name, msg, c.msg)
			}
		}
	}
	notFound("unknown DID", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
	notFound("unknown handle", "nobody.test")
	notFound("account of another host", elsewhere.DID().String())

	// Active: the record is served, an absent one is RecordNotFound.
	var got struct{ CID string }
	getJSON(t, getRecord(a.DID().String()), &got)
	if got.CID != rec.CID.String() {
		t.Fatalf("getRecord of the active account: cid %s, want %s", got.CID, rec.CID)
	}
	if code, e := xrpcError(t, pds+"com.atproto.repo.getRecord?repo=alice.test&collection=app.bsky.feed.post&rkey=3zzzzzzzzzzzz"); code != 400 || e != "RecordNotFound" {
		t.Fatalf("absent record of the active account: %d %s", code, e)
	}

	for _, c := range []struct {
		change func() (int64, error)
		status string // describeRepo's error
	}{
		{a.Deactivate, "RepoDeactivated"},
		{a.Takedown, "RepoTakendown"},
		{a.Suspend, "RepoSuspended"},
		{a.Delete, "RepoNotFound"},
	} {
		_, err := c.change()
		mustNoErr(t, err)
		notFound(c.status+" by DID", a.DID().String())
		notFound(c.status+" by handle", "alice.test")
		if code, e := xrpcError(t, pds+"com.atproto.repo.describeRepo?repo="+a.DID().String()); code != 400 || e != c.status {
			t.Fatalf("describeRepo, %s: %d %s", c.status, code, e)
		}
		if c.status != "RepoNotFound" {
			_, err := a.Activate()
			mustNoErr(t, err)
			getJSON(t, listRecords(a.DID().String()), &struct{}{})
		}
	}
	// Bad parameters are still named as such.
	if code, e := xrpcError(t, pds+"com.atproto.repo.listRecords?collection=app.bsky.feed.post"); code != 400 || e != "InvalidRequest" {
		t.Fatalf("listRecords without repo: %d %s", code, e)
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func TestHostFaults(t *testing.T) {
	n := New(t)
	a := n.Account(t, "alice.test", Records("app.bsky.feed.post", 200))
	h := n.Host(0)
	u := h.URL() + "/xrpc/com.atproto.sync.getRepo?did=" + a.DID().String()

	h.RateLimitNext("com.atproto.sync.getRepo", 2, 3*time.Second)
	for i := 0; i < 2; i++ {
		code, hdr, _ := get(t, u)
		reset, _ := strconv.ParseInt(hdr.Get("RateLimit-Reset"), 10, 64)
		if code != 429 || hdr.Get("Retry-After") != "3" || reset < time.Now().Unix()+2 {
			t.Fatalf("rate limit: %d %v", code, hdr)
		}
	}
	if code, _, _ := get(t, u); code != 200 {
		t.Fatalf("after rate limit: %d", code)
	}

	h.FailNext("", 1, 503)
	if code, _ := xrpcError(t, h.URL()+"/xrpc/com.atproto.sync.listRepos"); code != 503 {
		t.Fatalf("5xx: %d", code)
	}

	full, err := a.CAR()
	mustNoErr(t, err)
	h.TruncateGetRepo(1, 1000)
	resp, err := http.Get(u)
	mustNoErr(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(body) > 1000 {
		t.Fatalf("truncated body: %d bytes, err %v", len(body), err)
	}
	if code, _, b := get(t, u); code != 200 || !bytes.Equal(b, full) {
		t.Fatal("getRepo after truncation differs")
	}

	h.SlowGetRepo(20*time.Millisecond, len(full)/4+1)
	start := time.Now()
	code, _, b := get(t, u)
	if code != 200 || !bytes.Equal(b, full) || time.Since(start) < 60*time.Millisecond {
		t.Fatalf("slow getRepo: %d, %v", code, time.Since(start))
	}
	h.ClearFaults()
	if got := h.Requests("com.atproto.sync.getRepo"); got != 6 {
		t.Fatalf("getRepo count %d, want 6", got)
	}
}

func TestCommitFaults(t *testing.T) {
	n := New(t)
	a := n.Account(t, "alice.test", Records("app.bsky.feed.post", 30))
	ctx := context.Background()
	for _, f := range Faults {
		t.Run(f.String(), func(t *testing.T) {
			before := a.Rev()
			cm, err := a.ApplyFaulty(f, Create("app.bsky.feed.post", "", Post("app.bsky.feed.post", f.String())))
			mustNoErr(t, err)
			m := cm.Frame
			// The real repo advanced normally.
			if a.Rev() == before || a.Rev() != cm.Rev {
				t.Fatal("repo did not advance")
			}
			car, _ := a.CAR()
			commit, _, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(car))
			mustNoErr(t, err)
			mustNoErr(t, commit.VerifySignature(a.PublicKey()))
			if commit.Rev != cm.Rev {
				t.Fatal("getRepo does not serve the new commit")
			}
			// The frame is detectably wrong.
			switch f {
			case FaultBadSignature:
				c, _, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks))
				mustNoErr(t, err)
				if c.VerifySignature(a.PublicKey()) == nil {
					t.Fatal("signature verified")
				}
			case FaultWrongCommitCID:
				_, root, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks))
				mustNoErr(t, err)
				if *root == cidOf(m.Commit) {
					t.Fatal("commit CID matches")
				}
			case FaultBrokenChain:
				if _, err := repo.VerifyCommitMessage(ctx, m); err == nil {
					t.Fatal("broken chain verified")
				}
			case FaultFutureRev:
				c, _, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks))
				mustNoErr(t, err)
				mustNoErr(t, c.VerifySignature(a.PublicKey()))
				if revTime(t, m.Rev).Before(time.Now().Add(5*time.Minute)) || c.Rev != m.Rev {
					t.Fatalf("rev %s not in the future", m.Rev)
				}
			case FaultOversized:
				if len(m.Blocks) <= 2_000_000 || len(m.Blocks) >= 2<<20 {
					t.Fatalf("blocks %d bytes", len(m.Blocks))
				}
			case FaultMalformed:
				if _, _, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks)); err == nil {
					t.Fatal("malformed blocks loaded")
				}
			case FaultMissingOp, FaultWrongOpCID, FaultMissingBlock:
				// Signed, chained and addressed right: only the inversion
				// of the ops shows the fault.
				c, root, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks))
				mustNoErr(t, err)
				mustNoErr(t, c.VerifySignature(a.PublicKey()))
				if *root != cidOf(m.Commit) || c.Rev != m.Rev || c.DID != m.Repo || cidOf(*m.PrevData) != cm.PrevData {
					t.Fatal("frame wrong outside its ops and blocks")
				}
				if _, err := repo.VerifyCommitMessage(ctx, m); err == nil {
					t.Fatal("ops inverted to prevData")
				}
			case FaultWrongCommitDID, FaultWrongCommitRev:
				c, root, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks))
				mustNoErr(t, err)
				mustNoErr(t, c.VerifySignature(a.PublicKey()))
				if *root != cidOf(m.Commit) || m.Repo != a.DID().String() || m.Rev != cm.Rev {
					t.Fatal("frame's own fields changed")
				}
				if f == FaultWrongCommitDID && c.DID == m.Repo || f == FaultWrongCommitRev && c.Rev == m.Rev {
					t.Fatalf("signed commit %s@%s matches the frame", c.DID, c.Rev)
				}
			default:
				t.Fatalf("no check for %v", f)
			}
		})
	}
}

func TestRelayCursorReplay(t *testing.T) {
	n := New(t, WithRetention(8))
	a := n.Account(t, "alice.test") // seq 1-3
	for i := 0; i < 3; i++ {
		_, err := a.CreateRecord("app.bsky.feed.post", Post("app.bsky.feed.post", "x"))
		mustNoErr(t, err)
	} // seq 4-6
	c := subscribe(t, n, 2)
	fs := readFrames(t, c, 4)
	for i, f := range fs {
		if f.Seq != int64(3+i) {
			t.Fatalf("replay frame %d seq %d", i, f.Seq)
		}
	}
	for i := 0; i < 6; i++ {
		_, err := a.CreateRecord("app.bsky.feed.post", Post("app.bsky.feed.post", "y"))
		mustNoErr(t, err)
	} // seq 7-12; oldest retained is 5
	if got := readFrame(t, c); got.Seq != 7 {
		t.Fatalf("live frame seq %d", got.Seq)
	}
	old := subscribe(t, n, 1)
	info := readFrame(t, old)
	if info.Type != "#info" || info.Value.(*comatproto.SyncSubscribeRepos_Info).Name != "OutdatedCursor" {
		t.Fatalf("first frame %+v", info)
	}
	if f := readFrame(t, old); f.Seq != n.Relay().Oldest() || f.Seq != 5 {
		t.Fatalf("after OutdatedCursor: seq %d", f.Seq)
	}
	fut := subscribe(t, n, 100)
	if f := readFrame(t, fut); f.Op != -1 || f.Err != "FutureCursor" {
		t.Fatalf("future cursor: %+v", f)
	}
	// Dropping connections closes the stream; a new one resumes.
	if n.Relay().Connections() == 0 {
		t.Fatal("no connections")
	}
	n.Relay().DropConnections()
	ctx, cancel := context.WithTimeout(ctx0, 5*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			break
		}
	}
	c2 := subscribe(t, n, 11)
	if f := readFrame(t, c2); f.Seq != 12 {
		t.Fatalf("resume seq %d", f.Seq)
	}
}

var ctx0 = context.Background()

func revTime(t *testing.T, rev string) time.Time {
	tid, err := parseTID(rev)
	mustNoErr(t, err)
	return tid.Time()
}

var _ = json.Marshal

func TestSyncFaults(t *testing.T) {
	n := New(t)
	a := n.Account(t, "alice.test", Records("app.bsky.feed.post", 3))
	ctx := context.Background()
	for _, f := range []Fault{FaultBadSignature, FaultFutureRev, FaultWrongCommitDID, FaultWrongCommitRev} {
		t.Run(f.String(), func(t *testing.T) {
			seq, err := a.EmitSyncFaulty(f)
			mustNoErr(t, err)
			raw, ok := n.Relay().Frame(seq)
			if !ok {
				t.Fatalf("no frame %d", seq)
			}
			fr := decodeFrame(t, raw)
			m, ok := fr.Value.(*comatproto.SyncSubscribeRepos_Sync)
			if !ok {
				t.Fatalf("frame %s, want #sync", fr.Type)
			}
			c, _, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(m.Blocks))
			mustNoErr(t, err)
			if c.Data != a.DataCID() || m.Did != a.DID().String() {
				t.Fatalf("sync of %s at %s, account %s at %s", m.Did, c.Data, a.DID(), a.DataCID())
			}
			sigErr := c.VerifySignature(a.PublicKey())
			switch f {
			case FaultBadSignature:
				if sigErr == nil || c.Rev != m.Rev || m.Rev != a.Rev() {
					t.Fatalf("signature verified (%v) or rev changed (%s, %s)", sigErr, c.Rev, m.Rev)
				}
			case FaultFutureRev:
				mustNoErr(t, sigErr)
				if c.Rev != m.Rev || revTime(t, m.Rev).Before(time.Now().Add(5*time.Minute)) {
					t.Fatalf("rev %s (commit %s) not in the future", m.Rev, c.Rev)
				}
			case FaultWrongCommitDID:
				mustNoErr(t, sigErr)
				if c.DID == m.Did {
					t.Fatal("signed commit names the frame's DID")
				}
			case FaultWrongCommitRev:
				mustNoErr(t, sigErr)
				if c.Rev == m.Rev || m.Rev != a.Rev() {
					t.Fatalf("signed rev %s, frame rev %s, account %s", c.Rev, m.Rev, a.Rev())
				}
			}
		})
	}
	if _, err := a.EmitSyncFaulty(FaultMissingOp); err == nil {
		t.Fatal("a #commit-only fault accepted for #sync")
	}
}

func TestRotateKey(t *testing.T) {
	n := New(t)
	a := n.Account(t, "alice.test", Records("app.bsky.feed.post", 3))
	old := a.PublicKey()
	seq, err := a.RotateKey()
	mustNoErr(t, err)
	raw, ok := n.Relay().Frame(seq)
	if !ok {
		t.Fatalf("no frame %d", seq)
	}
	if fr := decodeFrame(t, raw); fr.Type != "#identity" {
		t.Fatalf("RotateKey emitted %s, want #identity", fr.Type)
	}
	if a.PublicKey().Equal(old) {
		t.Fatal("key unchanged")
	}
	id, err := n.Directory().LookupDID(context.Background(), a.DID())
	mustNoErr(t, err)
	pk, err := id.PublicKey()
	mustNoErr(t, err)
	if !pk.Equal(a.PublicKey()) {
		t.Fatal("the PLC directory serves the old key")
	}
	_, err = a.CreateRecord("app.bsky.feed.post", Post("app.bsky.feed.post", "new key"))
	mustNoErr(t, err)
	car, err := a.CAR()
	mustNoErr(t, err)
	commit, _, err := repo.LoadRepoFromCAR(context.Background(), bytes.NewReader(car))
	mustNoErr(t, err)
	mustNoErr(t, commit.VerifySignature(a.PublicKey()))
	if commit.VerifySignature(old) == nil {
		t.Fatal("a commit after the rotation verifies with the old key")
	}
}
