package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/store/pgstore"
	"github.com/cistern-dev/cistern/store/pgstore/pgtest"
)

// isPostgres reports whether a -db or -store value is a PostgreSQL URL.
func isPostgres(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// openStore opens the store a child's -db names: a PostgreSQL URL
// (pgstore) or a bbolt file.
func openStore(db string) (store.Store, error) {
	if isPostgres(db) {
		return pgstore.Open(context.Background(), db, nil)
	}
	return boltstore.Open(db, nil)
}

// pgDatabase returns the URL of a fresh schema for this run on the
// PostgreSQL server -store names; "throwaway" starts a server of the
// machine's PostgreSQL binaries with durable settings (fsync on, as
// bbolt's commits are), stopped by the returned function.
func pgDatabase(ctx context.Context, storeFlag string) (url string, stop func(), err error) {
	stop = func() {}
	base := storeFlag
	if storeFlag == "throwaway" {
		srv, err := pgtest.Start(ctx, &pgtest.StartOptions{Durable: true})
		if err != nil {
			return "", nil, err
		}
		base, stop = srv.URL, func() { srv.Stop() }
	}
	schema := fmt.Sprintf("cistern_bench_%d", time.Now().Unix())
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("connect %s: %w", pgstore.Redact(base), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		stop()
		return "", nil, err
	}
	return pgtest.WithSchema(base, schema), stop, nil
}
