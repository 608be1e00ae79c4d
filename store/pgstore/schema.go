package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cistern-dev/cistern/store"
)

// SchemaVersion is the version of the tables this package reads and writes.
// It is stored in cistern_sys when the tables are created. Open migrates
// tables of an older version (see migrations) and refuses a newer one.
//
// 2: cistern_events.error (repo events). 3: the backlink index
// (cistern_links, cistern_backlinks, cistern_link_counts,
// cistern_link_dids, cistern_sys.links).
const SchemaVersion = 3

// SchemaSQL creates the tables of SchemaVersion in the current schema (the
// first of the connection's search_path). Open runs it when the tables are
// absent, unless Options.NoCreate is set; an operator may run it by hand
// instead (psql -f), in a transaction.
//
// Strings that are keys use COLLATE "C", so that they sort as bytes: a
// record's path (collection "/" rkey) then sorts in MST order, which
// sorting by (collection, rkey) would not give ("a.b.c/x" comes before
// "a.b/x"). Times are (seconds, nanoseconds) pairs: timestamptz holds
// microseconds, and Unix nanoseconds in a bigint overflow past year 2262.
//
// cistern_event_times is the time index of the event log: an entry for
// each event whose time raised the running maximum of event times (kept in
// cistern_sys), so that times and ids both increase along it and
// EventAtTime is one index lookup. Pruning removes the entries whose
// events are all gone, but the newest of them, so that a time before the
// retained log still resolves below its oldest id.
//
// The backlink index is linksSQL: see there.
const SchemaSQL = `
CREATE TABLE cistern_sys (
	id             integer PRIMARY KEY,
	schema_version integer NOT NULL,
	last_event     bigint  NOT NULL,
	last_seq       bigint  NOT NULL,
	repos          bigint  NOT NULL,
	records        bigint  NOT NULL,
	events         bigint  NOT NULL,
	blocks         bigint  NOT NULL,
	block_bytes    bigint  NOT NULL,
	max_sec        bigint,
	max_nsec       integer,
	links          bigint  NOT NULL DEFAULT 0
);
INSERT INTO cistern_sys VALUES (1, 3, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0);

CREATE TABLE cistern_state_counts (
	state smallint PRIMARY KEY,
	n     bigint   NOT NULL
);

CREATE TABLE cistern_repos (
	did        text COLLATE "C" PRIMARY KEY,
	state      smallint NOT NULL,
	handle_key text COLLATE "C",
	handle_seq bigint   NOT NULL,
	data       bytea    NOT NULL
);
CREATE INDEX cistern_repos_handle ON cistern_repos (handle_key, handle_seq);

CREATE TABLE cistern_records (
	did        text COLLATE "C" NOT NULL,
	path       text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	cid        bytea  NOT NULL,
	rev        text   NOT NULL,
	seq        bigint NOT NULL,
	PRIMARY KEY (did, path)
);
CREATE INDEX cistern_records_by_collection ON cistern_records (collection, seq);

CREATE TABLE cistern_collections (
	did        text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	n          bigint NOT NULL,
	PRIMARY KEY (did, collection)
);

CREATE TABLE cistern_blocks (
	did   text COLLATE "C" NOT NULL,
	cid   bytea  NOT NULL,
	refs  bigint NOT NULL,
	value bytea,
	PRIMARY KEY (did, cid)
);

CREATE TABLE cistern_events (
	id         bigint PRIMARY KEY,
	kind       smallint NOT NULL,
	live       boolean  NOT NULL,
	did        text     NOT NULL,
	rev        text     NOT NULL,
	sec        bigint   NOT NULL,
	nsec       integer  NOT NULL,
	collection text     NOT NULL,
	rkey       text     NOT NULL,
	action     smallint NOT NULL,
	cid        bytea,
	handle     text     NOT NULL,
	active     boolean  NOT NULL,
	status     text     NOT NULL,
	error      text     NOT NULL DEFAULT ''
);

CREATE TABLE cistern_event_times (
	sec  bigint  NOT NULL,
	nsec integer NOT NULL,
	id   bigint  NOT NULL,
	PRIMARY KEY (sec, nsec)
);

CREATE TABLE cistern_queue (
	did      text COLLATE "C" PRIMARY KEY,
	due_sec  bigint  NOT NULL,
	due_nsec integer NOT NULL
);
CREATE INDEX cistern_queue_due ON cistern_queue (due_sec, due_nsec, did);

CREATE TABLE cistern_buffer (
	did    text COLLATE "C" NOT NULL,
	rev    text COLLATE "C" NOT NULL,
	seq    bigint NOT NULL,
	source text   NOT NULL,
	data   bytea  NOT NULL,
	PRIMARY KEY (did, rev)
);

CREATE TABLE cistern_meta (
	key   text COLLATE "C" PRIMARY KEY,
	value bytea NOT NULL
);

CREATE TABLE cistern_writers (
	writer text PRIMARY KEY,
	token  bigint NOT NULL
);
` + linksSQL

// linksSQL creates the tables of the backlink index (schema version 3).
//
// cistern_links is the forward side, one row per record that holds links:
// its links as two parallel arrays (targets[i] at paths[i], no pair twice)
// and the position they were put at. PutLinks and DeleteRecord read the
// old row back from the statement that replaces or deletes it, and derive
// the changes to the other three tables from the difference.
//
// cistern_backlinks is the reverse side, one row per link, keyed so that
// ScanBacklinks is an index range scan: (target, collection, path) equal,
// then by seq (the linking record's position), then did and rkey.
//
// cistern_link_counts holds, per source of a target, the number of
// linking records and of distinct DIDs among them; cistern_link_dids the
// number of linking records per DID, from whose upsert (RETURNING the new
// number) a transaction learns that a DID appeared or disappeared. Rows
// that reach 0 are deleted, so that ScanLinkSources visits only sources
// with links. Counts().Links is cistern_sys.links.
//
// On Citus, cistern_links is distributed by did with the other per-repo
// tables, and the other three by target (co-located), so that the queries
// of one target stay on one node.
const linksSQL = `
CREATE TABLE cistern_links (
	did        text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	rkey       text COLLATE "C" NOT NULL,
	seq        bigint NOT NULL,
	targets    text[] NOT NULL,
	paths      text[] NOT NULL,
	PRIMARY KEY (did, collection, rkey)
);

CREATE TABLE cistern_backlinks (
	target     text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	path       text COLLATE "C" NOT NULL,
	seq        bigint NOT NULL,
	did        text COLLATE "C" NOT NULL,
	rkey       text COLLATE "C" NOT NULL,
	PRIMARY KEY (target, collection, path, seq, did, rkey)
);

CREATE TABLE cistern_link_counts (
	target     text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	path       text COLLATE "C" NOT NULL,
	records    bigint NOT NULL,
	dids       bigint NOT NULL,
	PRIMARY KEY (target, collection, path)
);

CREATE TABLE cistern_link_dids (
	target     text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	path       text COLLATE "C" NOT NULL,
	did        text COLLATE "C" NOT NULL,
	n          bigint NOT NULL,
	PRIMARY KEY (target, collection, path, did)
);
`

// migrations[v] brings tables of schema version v to version v+1. Open
// runs them in one transaction, holding the cistern_sys row.
var migrations = map[int]string{
	1: `ALTER TABLE cistern_events ADD COLUMN error text NOT NULL DEFAULT ''`,
	2: `ALTER TABLE cistern_sys ADD COLUMN links bigint NOT NULL DEFAULT 0;` + linksSQL,
}

// init checks the schema version of the tables in the current schema, or
// creates them when absent (unless noCreate).
func (s *Store) init(ctx context.Context, noCreate bool) error {
	for attempt := 0; ; attempt++ {
		v, err := s.schemaVersion(ctx)
		if err == nil {
			switch {
			case v == SchemaVersion:
				return nil
			case v < SchemaVersion && migrations[v] != "" && noCreate:
				return fmt.Errorf("database has schema version %d, this build reads version %d (open it once without NoCreate to migrate it): %w",
					v, SchemaVersion, store.ErrSchemaVersion)
			case v < SchemaVersion && migrations[v] != "":
				return s.migrate(ctx)
			}
			return fmt.Errorf("database has schema version %d, this build reads version %d: %w",
				v, SchemaVersion, store.ErrSchemaVersion)
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P01" { // undefined_table
			return err
		}
		if noCreate {
			return fmt.Errorf("no cistern tables in schema %q (create them with pgstore.SchemaSQL, or open without NoCreate): %w",
				s.schema, store.ErrSchemaVersion)
		}
		if others, err := s.otherTables(ctx); err != nil {
			return err
		} else if others > 0 {
			return fmt.Errorf("schema %q holds cistern tables but no cistern_sys: %w", s.schema, store.ErrSchemaVersion)
		}
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, SchemaSQL)
			return err
		})
		if err == nil {
			s.log.Info("pgstore: created tables", "url", s.url, "schema", s.schema, "version", SchemaVersion)
			return nil
		}
		// Another process may have created them at the same time.
		if attempt > 0 || !errors.As(err, &pgErr) || (pgErr.Code != "42P07" && pgErr.Code != "23505") {
			return fmt.Errorf("create tables: %w", err)
		}
	}
}

// migrate brings the tables to SchemaVersion, in one transaction that
// holds the cistern_sys row, so that processes opening the store at once
// migrate it once.
func (s *Store) migrate(ctx context.Context) error {
	var from int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var v int
		if err := tx.QueryRow(ctx, `SELECT schema_version FROM cistern_sys WHERE id = 1 FOR UPDATE`).Scan(&v); err != nil {
			return err
		}
		from = v
		for ; v < SchemaVersion; v++ {
			sql, ok := migrations[v]
			if !ok {
				return fmt.Errorf("no migration from schema version %d: %w", v, store.ErrSchemaVersion)
			}
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("schema version %d to %d: %w", v, v+1, err)
			}
		}
		if v > SchemaVersion {
			return fmt.Errorf("database has schema version %d, this build reads version %d: %w", v, SchemaVersion, store.ErrSchemaVersion)
		}
		_, err := tx.Exec(ctx, `UPDATE cistern_sys SET schema_version = $1 WHERE id = 1`, SchemaVersion)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate tables: %w", err)
	}
	if from != SchemaVersion {
		s.log.Info("pgstore: migrated tables", "url", s.url, "schema", s.schema, "from", from, "to", SchemaVersion)
	}
	return nil
}

func (s *Store) schemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT schema_version FROM cistern_sys WHERE id = 1`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("cistern_sys has no row: %w", store.ErrSchemaVersion)
	}
	return v, err
}

// otherTables counts cistern_ tables in the current schema.
func (s *Store) otherTables(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_name LIKE 'cistern\_%'`).Scan(&n)
	return n, err
}
