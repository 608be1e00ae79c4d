// Package pgstore is a store.Store on PostgreSQL, for indexes that outgrow
// one machine's disk and for read replicas: any number of processes can
// serve queries and the event stream from the database one indexer writes.
//
// # Opening
//
// Open takes a postgres:// URL (or a key=value connection string) and
// connects with a pool of github.com/jackc/pgx/v5 connections. The tables
// live in the current schema of the connections: the first schema of the
// search_path, which the URL may set (?search_path=cistern), or
// Options.Schema, which Open creates when absent. On a database without the
// tables Open creates them (SchemaSQL, schema version SchemaVersion); with
// Options.NoCreate it refuses instead. Tables of an older schema version
// are migrated in one transaction (with NoCreate, refused); tables of a
// newer one are refused, with an error wrapping store.ErrSchemaVersion. An
// unreachable or
// misconfigured database fails Open with an error naming the URL, password
// hidden, and the cause.
//
// # Transactions
//
// View runs in a REPEATABLE READ READ ONLY transaction: one snapshot for
// everything it reads, counters included. A write attempted through it
// returns store.ErrReadOnly. Scans fetch keyset pages of a few hundred rows
// inside that snapshot and call back between pages, so a callback may run
// other reads of the same transaction.
//
// Update runs in a READ COMMITTED transaction that starts by locking the one
// row of cistern_sys (SELECT … FOR UPDATE). That row holds the last event id
// and record position assigned and the store's counters, so the lock makes
// writers take turns (cistern has one writer anyway): ids are assigned in
// Go from the locked row, written back before commit, and so are gapless,
// in commit order, and given out again after a rollback, as store.Tx
// requires. A SQL sequence would be none of these. Block reference counts,
// per-repo collection counts and counters are kept in memory during the
// transaction and written at its end in one pipelined batch, with the
// event rows.
//
// A connection lost during an Update (a server restart, a failover, a
// killed backend) or a serialization failure does not fail it: the
// transaction is rolled back and fn is run again on a new connection, with
// exponential backoff (50 ms doubling to 5 s) for up to Options.RetryFor.
// Each Update writes a token of its own into cistern_writers in the same
// transaction; when the connection is lost during COMMIT, whether the
// transaction committed is read back from that token, so a committed
// transaction is never done twice and an uncommitted one never lost. fn must
// therefore be safe to run more than once, as internal/writer's closures
// are. A View is not re-run (its callbacks may have had effects); a
// connection lost before it starts is retried.
//
// # Layout
//
// Records are keyed by (did, path) with path = collection "/" rkey in
// COLLATE "C", so ScanRecords is an index range scan in MST order; an index
// on (collection, seq) serves ScanCollection. Record values are stored
// once per (did, cid) in cistern_blocks with a reference count, as in
// boltstore. Repo states are stored as CBOR (the same encoding as
// boltstore), beside their state and lower-cased handle as columns.
//
// The backlink index (PutLinks) keeps each record's links in one row of
// cistern_links and each link again in cistern_backlinks, keyed (target,
// collection, path, seq, did, rkey), so that ScanBacklinks is an index
// range scan in either direction. Counts per source (records, distinct
// DIDs) are rows of cistern_link_counts, kept exact through a per-DID
// count (cistern_link_dids), so CountBacklinks and ScanLinkSources read
// no links. PutLinks and DeleteRecord are queued like the record writes;
// the reverse rows and counts they imply cost one more round trip, before
// the next read of the index and at commit.
//
// # Distributed SQL
//
// The SQL is kept to what YugabyteDB (YSQL) and Citus also accept: plain
// tables with primary keys, COLLATE "C", text[] columns, INSERT … ON
// CONFLICT (… RETURNING), multi-row INSERT … SELECT FROM unnest(arrays)
// (which Citus plans through the coordinator), row comparisons,
// data-modifying WITH clauses on one table, SELECT … FOR UPDATE. Neither
// engine can be installed here, so this is by their documentation, not
// tested. PostgreSQL-only: Size
// (pg_total_relation_size, where YugabyteDB reports nothing useful) and
// the creation or migration of the tables in one transaction (YugabyteDB
// runs DDL outside transactions: run SchemaSQL, or the migration, once by
// hand there). On Citus the per-repo tables (repos, records, collections,
// blocks, buffer, queue, links) would be distributed by did, and the
// per-target tables of the backlink index (backlinks, link_counts,
// link_dids) by target, co-located, so that a target's queries and count
// updates stay on one node; cistern_sys,
// cistern_state_counts, cistern_meta and cistern_writers are a few rows
// each; the log (cistern_events, cistern_event_times) is read by id and
// stays on one node, or is range-distributed by id. Citus has no
// distributed snapshot isolation by default, which View relies on;
// YugabyteDB's is the closer fit.
//
// Two things do not shard, and a partitioned deployment would change them
// as follows (docs/scaling.md has the design and the numbers):
//
//   - The one event counter. Every write transaction locks the cistern_sys
//     row, which is what makes ids gapless and in commit order. Partitioned
//     ingestion gives each partition (a DID hash range) its own counter row
//     and its own event table, so ids are per partition; a consumer follows
//     one cursor per partition and merges them. Order across partitions is
//     then by time, not by one id, which is all a consumer of separate
//     repos can rely on anyway.
//   - ScanCollection, newest first across all repos, reads one index on
//     (collection, seq). Sharded by did, each shard holds its part of that
//     index and seq comes from its own partition counter; the query becomes
//     a merge of per-shard scans ordered by (time, partition, seq), and its
//     cursor a vector of per-partition positions.
package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cistern-dev/cistern/store"
)

// Options configure Open. The zero value (or a nil *Options) gives the
// defaults.
type Options struct {
	// Schema, if set, is the PostgreSQL schema holding the tables; Open
	// creates it when absent (unless NoCreate) and puts it first on the
	// search_path of every connection. Default: the URL's search_path, or
	// the server's default (public).
	Schema string
	// NoCreate makes Open refuse a database without the tables instead of
	// creating them, for processes that must not write (read replicas,
	// whose database may be a read-only standby).
	NoCreate bool
	// MaxConns bounds the pool's connections. Default: the URL's
	// pool_max_conns, or pgxpool's default (the larger of 4 and the
	// number of CPUs).
	MaxConns int32
	// RetryFor is how long Update keeps redoing a transaction whose
	// connection failed before giving up with the last error. Default 1
	// minute.
	RetryFor time.Duration
	// ConnectTimeout bounds the first connection Open makes. Default 15 s.
	ConnectTimeout time.Duration
	// Logger receives the store's rare log lines (tables created,
	// transactions retried). Default: discard.
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	var out Options
	if o != nil {
		out = *o
	}
	if out.RetryFor <= 0 {
		out.RetryFor = time.Minute
	}
	if out.ConnectTimeout <= 0 {
		out.ConnectTimeout = 15 * time.Second
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out
}

// Store is a store.Store on a PostgreSQL database. It is safe for
// concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	url    string // redacted
	schema string
	log    *slog.Logger
	opts   Options
	enc    cbor.EncMode
	dec    cbor.DecMode

	// writeMu makes this process's Updates take turns before they reach
	// the database, so that a token read back after a lost COMMIT was
	// written by this Update and no other.
	writeMu sync.Mutex
	writer  string // this Store's row in cistern_writers
	token   int64  // the last token written (under writeMu)

	retries atomic.Uint64

	closed  atomic.Bool
	closing chan struct{} // closed by Close: retry waits end
	once    sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at connString, checks or creates the
// tables, and returns the store. Errors name the URL with its password
// hidden.
func Open(ctx context.Context, connString string, opts *Options) (*Store, error) {
	o := opts.withDefaults()
	shown := Redact(connString)
	fail := func(err error) (*Store, error) {
		return nil, fmt.Errorf("pgstore: open %s: %w", shown, err)
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		// pgx's parse errors may quote the string, password included.
		return fail(errors.New(redactAll(err.Error(), connString)))
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{o.Schema}.Sanitize()
	}
	enc, dec, err := codecs()
	if err != nil {
		return fail(err)
	}
	var b [8]byte
	rand.Read(b[:])
	s := &Store{url: shown, schema: o.Schema, log: o.Logger, opts: o, enc: enc, dec: dec,
		writer: hex.EncodeToString(b[:]), closing: make(chan struct{})}
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if o.Schema != "" && !o.NoCreate {
		// The schema must exist before a connection can use it.
		boot := cfg.ConnConfig.Copy()
		delete(boot.RuntimeParams, "search_path")
		conn, err := pgx.ConnectConfig(cctx, boot)
		if err != nil {
			return fail(err)
		}
		_, err = conn.Exec(cctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{o.Schema}.Sanitize())
		conn.Close(ctx)
		if err != nil {
			return fail(fmt.Errorf("create schema %q: %w", o.Schema, err))
		}
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	if err := s.pool.Ping(cctx); err != nil {
		s.pool.Close()
		return fail(err)
	}
	if s.schema == "" {
		var cur *string
		if err := s.pool.QueryRow(cctx, `SELECT current_schema()`).Scan(&cur); err != nil {
			s.pool.Close()
			return fail(err)
		}
		if cur == nil {
			s.pool.Close()
			return fail(errors.New("the search_path names no existing schema (create it, or set Options.Schema)"))
		}
		s.schema = *cur
	}
	if err := s.init(cctx, o.NoCreate); err != nil {
		s.pool.Close()
		return fail(err)
	}
	return s, nil
}

// codecs returns the CBOR modes for repo states: those of boltstore (core
// deterministic, times as RFC 3339 with nanoseconds, unknown fields
// ignored).
func codecs() (cbor.EncMode, cbor.DecMode, error) {
	eo := cbor.CoreDetEncOptions()
	eo.Time = cbor.TimeRFC3339NanoUTC
	enc, err := eo.EncMode()
	if err != nil {
		return nil, nil, err
	}
	dec, err := cbor.DecOptions{}.DecMode()
	if err != nil {
		return nil, nil, err
	}
	return enc, dec, nil
}

var passwordParam = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns a connection string with its password replaced by
// "xxxxx", for logs and errors.
func Redact(connString string) string {
	if u, err := url.Parse(connString); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	connString = urlPassword.ReplaceAllString(connString, "${1}xxxxx@")
	return passwordParam.ReplaceAllString(connString, "${1}xxxxx")
}

// urlPassword matches the password of a URL that net/url cannot parse.
var urlPassword = regexp.MustCompile(`(://[^:/@]*:)[^@/]*@`)

// redactAll removes from msg the password of connString wherever it
// appears.
func redactAll(msg, connString string) string {
	msg = strings.ReplaceAll(msg, connString, Redact(connString))
	if u, err := url.Parse(connString); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return passwordParam.ReplaceAllString(msg, "${1}xxxxx")
}

// URL returns the connection string Open was given, password hidden.
func (s *Store) URL() string { return s.url }

// Schema returns the PostgreSQL schema holding the tables.
func (s *Store) Schema() string { return s.schema }

// Pool returns the connection pool, for callers that read the tables
// directly (monitoring); writing through it bypasses the store's
// counters.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// View runs fn in a REPEATABLE READ READ ONLY transaction. The store.ReadTx
// it is given also implements store.Tx, whose write methods return
// store.ErrReadOnly. View returns ctx.Err() without running fn if ctx is
// already done, and store.ErrClosed after Close. A connection that fails
// before fn runs is replaced (within Options.RetryFor); fn itself is run
// at most once.
func (s *Store) View(ctx context.Context, fn func(tx store.ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	var ptx pgx.Tx
	err := s.retry(ctx, "view", func() (error, bool) {
		var err error
		ptx, err = s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return err, retryable(err, nil)
		}
		return nil, false
	})
	if err != nil {
		return s.wrapClosed(fmt.Errorf("pgstore: view: begin: %w", err))
	}
	defer ptx.Rollback(context.WithoutCancel(ctx))
	return fn(s.newTx(ctx, ptx, false))
}

// Update runs fn in a read-write transaction and commits it if fn returns
// nil; otherwise nothing fn did is kept and fn's error is returned as is.
// A lost connection or a serialization failure makes Update roll back and
// run fn again (see the package doc), so fn must be safe to run more than
// once. Update returns ctx.Err() without running fn if ctx is already
// done, and store.ErrClosed after Close. Once fn has run, ctx no longer
// cancels the transaction; it ends the waits between retries.
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.token++
	token := s.token
	var fnErr error
	err := s.retry(ctx, "update", func() (error, bool) {
		var err error
		fnErr, err = s.updateOnce(context.WithoutCancel(ctx), fn, token)
		if err != nil {
			return err, true
		}
		return nil, false
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return s.wrapClosed(fmt.Errorf("pgstore: update: %w", err))
	}
	return nil
}

// wrapClosed makes an error caused by Close wrap store.ErrClosed.
func (s *Store) wrapClosed(err error) error {
	if s.closed.Load() && !errors.Is(err, store.ErrClosed) {
		return fmt.Errorf("%w (%v)", store.ErrClosed, err)
	}
	return err
}

// retry runs attempt until it succeeds or fails for good, waiting with
// exponential backoff between attempts that report a retryable failure,
// for up to Options.RetryFor.
func (s *Store) retry(ctx context.Context, what string, attempt func() (err error, retry bool)) error {
	deadline := time.Now().Add(s.opts.RetryFor)
	wait := 50 * time.Millisecond
	for n := 1; ; n++ {
		err, again := attempt()
		if err == nil || !again {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (gave up after %d attempts)", err, n)
		}
		s.retries.Add(1)
		// A lost connection usually means the others are lost too (a
		// restart, a failover): drop the idle ones rather than try each.
		s.pool.Reset()
		s.log.Warn("pgstore: connection failed; retrying", "op", what, "attempt", n, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("%w (while retrying after: %v)", ctx.Err(), err)
		case <-s.closing:
			return fmt.Errorf("%w (while retrying after: %v)", store.ErrClosed, err)
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// updateOnce runs one attempt of an Update. fnErr is fn's error (the
// transaction was rolled back); err is a failure that calls for another
// attempt.
func (s *Store) updateOnce(ctx context.Context, fn func(tx store.Tx) error, token int64) (fnErr, err error) {
	ptx, err := s.pool.Begin(ctx)
	if err != nil {
		if retryable(err, nil) {
			return nil, err
		}
		return fmt.Errorf("pgstore: update: begin: %w", err), nil
	}
	rollback := func() { ptx.Rollback(ctx) }
	defer rollback() // after Commit, a no-op; if fn panics, the connection goes back clean
	t := s.newTx(ctx, ptx, true)
	if err := ptx.QueryRow(ctx, `SELECT last_event, last_seq, repos, records, events, blocks, block_bytes, links, max_sec, max_nsec
		FROM cistern_sys WHERE id = 1 FOR UPDATE`).Scan(&t.lastEvent, &t.lastSeq,
		&t.base.repos, &t.base.records, &t.base.events, &t.base.blocks, &t.base.blockBytes, &t.base.links, &t.maxSec, &t.maxNsec); err != nil {
		rollback()
		if retryable(err, ptx) {
			return nil, err
		}
		return fmt.Errorf("pgstore: update: lock cistern_sys: %w", err), nil
	}
	ferr := fn(t)
	if t.connErr != nil {
		rollback()
		return nil, t.connErr
	}
	if ferr != nil {
		rollback()
		return ferr, nil
	}
	if t.sqlErr != nil {
		// fn went on after a failed statement; the database has aborted
		// the transaction.
		rollback()
		return fmt.Errorf("pgstore: update: a statement failed and fn ignored it: %w", t.sqlErr), nil
	}
	if err := t.finish(token); err != nil {
		rollback()
		if t.connErr != nil {
			return nil, t.connErr
		}
		return fmt.Errorf("pgstore: update: %w", err), nil
	}
	cerr := ptx.Commit(ctx)
	if cerr == nil {
		return nil, nil
	}
	if !retryable(cerr, ptx) {
		return fmt.Errorf("pgstore: update: commit: %w", cerr), nil
	}
	// The connection failed during COMMIT: the transaction may or may not
	// have committed. The token says which.
	var committed bool
	err = s.retry(ctx, "check commit", func() (error, bool) {
		var got int64
		err := s.pool.QueryRow(ctx, `SELECT token FROM cistern_writers WHERE writer = $1`, s.writer).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			committed = false
			return nil, false
		}
		if err != nil {
			return err, retryable(err, nil)
		}
		committed = got == token
		return nil, false
	})
	if err != nil {
		return fmt.Errorf("pgstore: update: commit outcome unknown: %v; checking it: %w", cerr, err), nil
	}
	if committed {
		s.log.Warn("pgstore: connection lost during commit; the transaction had committed", "err", cerr)
		return nil, nil
	}
	return nil, cerr
}

// Retries returns how many times a transaction was begun or redone after
// a connection failure or serialization failure, since Open.
func (s *Store) Retries() uint64 { return s.retries.Load() }

// Size returns the bytes the store's tables and indexes occupy, or 0 if
// it cannot be read (PostgreSQL's pg_total_relation_size).
func (s *Store) Size() int64 {
	if s.closed.Load() {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n *int64
	err := s.pool.QueryRow(ctx, `SELECT sum(pg_total_relation_size(c.oid))::bigint
		FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
		WHERE ns.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE 'cistern\_%'`).Scan(&n)
	if err != nil || n == nil {
		return 0
	}
	return *n
}

// Close waits for running transactions to end and closes the pool. Later
// calls to View and Update return store.ErrClosed; Updates waiting to
// retry give up. Closing twice is not an error.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.closing)
	s.writeMu.Lock() // the running Update, if any, ends
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s.pool.Exec(ctx, `DELETE FROM cistern_writers WHERE writer = $1`, s.writer)
	cancel()
	s.writeMu.Unlock()
	s.pool.Close()
	return nil
}
