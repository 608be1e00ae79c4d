package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/pgstore"
)

// isPostgresURL reports whether -store names a PostgreSQL database rather
// than a bbolt file.
func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// storeLocation is where the store lives: -store when given, else -db.
func (c *config) storeLocation() string {
	if c.Store != "" {
		return c.Store
	}
	return c.DB
}

// openStore opens the PostgreSQL store -store names, or returns nil when
// the store is a bbolt file (opened by cistern.Open from Config.Path). The
// second result describes the store for the start-up line, password
// hidden.
func openStore(ctx context.Context, c *config, log *slog.Logger) (store.Store, string, error) {
	loc := c.storeLocation()
	if !isPostgresURL(loc) {
		return nil, loc, nil
	}
	s, err := pgstore.Open(ctx, loc, &pgstore.Options{Logger: log.With("component", "pgstore"), NoCreate: c.ReadOnly})
	if err != nil {
		return nil, "", err
	}
	return s, fmt.Sprintf("%s (schema %s)", s.URL(), s.Schema()), nil
}
