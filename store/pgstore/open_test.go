package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/pgstore"
	"github.com/cistern-dev/cistern/store/pgstore/pgtest"
)

func TestOpenFailsNamingURLAndCause(t *testing.T) {
	base := pgtest.URL(t)
	u, _ := url.Parse(base)
	wrongDB := *u
	wrongDB.Path = "/no_such_database"
	wrongDB.User = url.UserPassword("postgres", "s3cret-pw")
	tests := []struct {
		name      string
		url       string
		wantParts []string
	}{
		{"unreachable", "postgres://cistern:s3cret-pw@127.0.0.1:1/cistern?connect_timeout=2",
			[]string{"127.0.0.1:1", "xxxxx", "connect"}},
		{"malformed", "postgres://cistern:s3cret-pw@127.0.0.1:notaport/cistern",
			[]string{"pgstore: open", "notaport"}},
		{"unknown database", wrongDB.String(), []string{u.Host, "no_such_database", "does not exist"}},
		{"missing schema", pgtest.WithSchema(base, "no_such_schema"), []string{"search_path", "no existing schema"}},
		{"key=value form", "host=127.0.0.1 port=1 user=x password=s3cret-pw connect_timeout=2",
			[]string{"port=1", "password=xxxxx"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := pgstore.Open(t.Context(), tc.url, &pgstore.Options{ConnectTimeout: 5 * time.Second})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded", tc.name)
			}
			msg := err.Error()
			if strings.Contains(msg, "s3cret-pw") {
				t.Errorf("error shows the password: %s", msg)
			}
			for _, p := range tc.wantParts {
				if !strings.Contains(msg, p) {
					t.Errorf("error %q does not mention %q", msg, p)
				}
			}
		})
	}
}

func TestSchemaVersionRefused(t *testing.T) {
	u := pgtest.Schema(t)
	s, err := pgstore.Open(t.Context(), u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(t.Context(), `UPDATE cistern_sys SET schema_version = 99`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = pgstore.Open(t.Context(), u, nil)
	if !errors.Is(err, store.ErrSchemaVersion) || !strings.Contains(err.Error(), "99") {
		t.Errorf("Open of schema version 99 = %v, want ErrSchemaVersion naming 99", err)
	}

	// NoCreate refuses a database without the tables, and creates none.
	empty := pgtest.Schema(t)
	_, err = pgstore.Open(t.Context(), empty, &pgstore.Options{NoCreate: true})
	if !errors.Is(err, store.ErrSchemaVersion) {
		t.Errorf("Open with NoCreate of an empty schema = %v, want ErrSchemaVersion", err)
	}
	s, err = pgstore.Open(t.Context(), empty, nil)
	if err != nil {
		t.Fatalf("Open creating the tables after a NoCreate refusal: %v", err)
	}
	s.Close()
	s, err = pgstore.Open(t.Context(), empty, &pgstore.Options{NoCreate: true})
	if err != nil {
		t.Fatalf("Open with NoCreate of created tables: %v", err)
	}
	s.Close()
}

func TestOptionsSchemaIsCreated(t *testing.T) {
	base := pgtest.URL(t)
	name := fmt.Sprintf("opt_schema_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), base)
		if err == nil {
			conn.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
			conn.Close(context.Background())
		}
	})
	s, err := pgstore.Open(t.Context(), base, &pgstore.Options{Schema: name})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Schema() != name {
		t.Errorf("Schema() = %q, want %q", s.Schema(), name)
	}
	if err := s.Update(t.Context(), func(tx store.Tx) error { return tx.PutMeta("k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.Pool().QueryRow(t.Context(), "SELECT count(*) FROM "+name+".cistern_meta").Scan(&n); err != nil || n != 1 {
		t.Errorf("rows in %s.cistern_meta = %d (%v), want 1", name, n, err)
	}
	if s.Size() <= 0 {
		t.Errorf("Size() = %d, want > 0", s.Size())
	}
}

// TestUpdateSurvivesKilledConnections kills the store's connections over
// and over while it writes and reads: every Update is redone or found
// committed, so the log holds each write exactly once, ids without gaps.
func TestUpdateSurvivesKilledConnections(t *testing.T) {
	u := pgtest.Schema(t)
	parsed, _ := url.Parse(u)
	q := parsed.Query()
	q.Set("application_name", "pgstore_victim")
	parsed.RawQuery = q.Encode()
	s, err := pgstore.Open(t.Context(), parsed.String(), &pgstore.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	killer, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer killer.Close(context.Background())

	// At least minWrites, and on until a few connections were killed and
	// a transaction redone (a fast machine can finish minWrites before the
	// killer's first round), within a bound.
	const minWrites, maxWrites = 150, 20000
	stop := make(chan struct{})
	var killed atomic.Int64
	var wg sync.WaitGroup
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer halt()
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(150+rand.IntN(250)) * time.Millisecond):
			}
			var n int64
			err := killer.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE application_name = 'pgstore_victim' AND pid <> pg_backend_pid()) k`).Scan(&n)
			if err != nil {
				t.Errorf("killer: %v", err)
				return
			}
			killed.Add(n)
		}
	})
	// A reader beside the writer; its failures are allowed (a View is not
	// redone), its answers must be consistent.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.View(context.Background(), func(tx store.ReadTx) error {
				_, newest, err := tx.EventBounds()
				if err != nil {
					return err
				}
				c, err := tx.Counts()
				if err != nil {
					return err
				}
				if uint64(c.Events) != newest || c.Records != c.Events {
					t.Errorf("torn read: newest %d, counts %+v", newest, c)
				}
				return nil
			})
		}
	})
	writes := 0
	for i := 0; i < maxWrites && (i < minWrites || killed.Load() < 3 || s.Retries() == 0); i++ {
		writes++
		err := s.Update(context.Background(), func(tx store.Tx) error {
			rkey := fmt.Sprintf("3k%04d", i)
			v := []byte(fmt.Sprintf("value %d", i))
			cid := append([]byte{1, 0x71, 0x12, 0x20}, []byte(rkey)...)
			if err := tx.PutRecord(&store.Record{DID: "did:plc:k", Collection: "a.b", RKey: rkey, CID: cid, Rev: rkey, Value: v}); err != nil {
				return err
			}
			return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: "did:plc:k", Rev: rkey, Collection: "a.b", RKey: rkey,
				Action: store.ActionCreate, CID: cid, Record: v, Time: time.Unix(int64(i), 0)})
		})
		if err != nil {
			t.Fatalf("Update %d: %v", i, err)
		}
	}
	halt()
	if killed.Load() == 0 {
		t.Fatalf("no connection was killed: the test proved nothing")
	}
	var revs []string
	var id uint64
	err = s.View(t.Context(), func(tx store.ReadTx) error {
		if c, err := tx.Counts(); err != nil || c.Events != int64(writes) || c.Records != int64(writes) || c.Blocks != int64(writes) {
			t.Errorf("Counts = %+v (%v), want %d events, records and blocks", c, err, writes)
		}
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			id++
			if ev.ID != id {
				t.Errorf("event id %d where %d expected", ev.ID, id)
				id = ev.ID
			}
			if n, err := tx.BlockRefs(ev.DID, ev.CID); err != nil || n != 2 {
				t.Errorf("refs of event %d's value = %d (%v), want 2", ev.ID, n, err)
			}
			revs = append(revs, ev.Rev)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != writes {
		t.Fatalf("%d events, want %d", len(revs), writes)
	}
	for i, rev := range revs {
		if want := fmt.Sprintf("3k%04d", i); rev != want {
			t.Fatalf("event %d has rev %s, want %s: a write was lost or doubled", i+1, rev, want)
		}
	}
	t.Logf("%d connections killed, %d transactions redone", killed.Load(), s.Retries())
	if s.Retries() == 0 {
		t.Errorf("no Update was redone although %d connections were killed", killed.Load())
	}
}

// TestSchemaMigrates: tables of an older schema version are migrated by
// Open, keeping their data, and NoCreate refuses to migrate them.
func TestSchemaMigrates(t *testing.T) {
	// downgrade turns tables of the current version into those of an
	// older one.
	downgrade := map[int]string{
		2: `DROP TABLE cistern_links, cistern_backlinks, cistern_link_counts, cistern_link_dids;
			ALTER TABLE cistern_sys DROP COLUMN links; UPDATE cistern_sys SET schema_version = 2`,
		1: `DROP TABLE cistern_links, cistern_backlinks, cistern_link_counts, cistern_link_dids;
			ALTER TABLE cistern_sys DROP COLUMN links; ALTER TABLE cistern_events DROP COLUMN error;
			UPDATE cistern_sys SET schema_version = 1`,
	}
	for _, from := range []int{1, 2} {
		t.Run(fmt.Sprintf("from %d", from), func(t *testing.T) {
			u := pgtest.Schema(t)
			s, err := pgstore.Open(t.Context(), u, nil)
			if err != nil {
				t.Fatal(err)
			}
			v := []byte("a value")
			cid := []byte{1, 0x71, 0x12, 0x20, 9}
			r := &store.Record{DID: "did:plc:m", Collection: "app.bsky.feed.like", RKey: "3k1", CID: cid, Rev: "3k1", Value: v}
			err = s.Update(t.Context(), func(tx store.Tx) error {
				if err := tx.PutRecord(r); err != nil {
					return err
				}
				return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Rev: r.Rev, Collection: r.Collection, RKey: r.RKey,
					Action: store.ActionCreate, CID: cid, Record: v, Time: time.Unix(1, 0)})
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Pool().Exec(t.Context(), downgrade[from]); err != nil {
				t.Fatal(err)
			}
			s.Close()

			if _, err := pgstore.Open(t.Context(), u, &pgstore.Options{NoCreate: true}); !errors.Is(err, store.ErrSchemaVersion) ||
				!strings.Contains(err.Error(), "NoCreate") {
				t.Errorf("Open with NoCreate of schema version %d = %v, want ErrSchemaVersion saying to open without NoCreate", from, err)
			}
			s, err = pgstore.Open(t.Context(), u, nil)
			if err != nil {
				t.Fatalf("Open of schema version %d: %v", from, err)
			}
			defer s.Close()
			var version int
			if err := s.Pool().QueryRow(t.Context(), `SELECT schema_version FROM cistern_sys`).Scan(&version); err != nil || version != pgstore.SchemaVersion {
				t.Errorf("schema version after Open = %d (%v), want %d", version, err, pgstore.SchemaVersion)
			}
			target := "at://did:plc:x/app.bsky.feed.post/3k"
			err = s.Update(t.Context(), func(tx store.Tx) error {
				return tx.PutLinks(r.DID, r.Collection, r.RKey, r.Seq, []store.Link{{Target: target, Path: "subject.uri"}})
			})
			if err != nil {
				t.Fatalf("PutLinks after migrating: %v", err)
			}
			err = s.View(t.Context(), func(tx store.ReadTx) error {
				got, err := tx.Record(r.DID, r.Collection, r.RKey)
				if err != nil || string(got.Value) != string(v) {
					t.Errorf("record after migrating = %+v (%v)", got, err)
				}
				ev, err := tx.Event(1)
				if err != nil || ev.Error != "" || string(ev.Record) != string(v) {
					t.Errorf("event after migrating = %+v (%v)", ev, err)
				}
				c, err := tx.Counts()
				if err != nil || c.Records != 1 || c.Events != 1 || c.Links != 1 {
					t.Errorf("Counts after migrating = %+v (%v), want 1 record, event and link", c, err)
				}
				n, err := tx.CountBacklinks(target, r.Collection, "subject.uri")
				if err != nil || n != (store.BacklinkCount{Records: 1, DIDs: 1}) {
					t.Errorf("CountBacklinks after migrating = %+v (%v)", n, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
