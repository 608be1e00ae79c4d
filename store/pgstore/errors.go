package pgstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cistern-dev/cistern/store"
)

// retryable reports whether err means the transaction can be done again
// on another connection: the connection was lost (or the server is going
// down or starting), or the database gave up the transaction to keep it
// serializable (40001, 40P01). ptx, if not nil, is the transaction the
// error came from; a closed connection under it counts as lost.
func retryable(err error, ptx pgx.Tx) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // admin/crash shutdown, cannot connect now
			return true
		case pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	if ptx != nil && ptx.Conn() != nil && ptx.Conn().IsClosed() {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	return strings.Contains(err.Error(), "conn closed")
}

// readOnlyErr maps PostgreSQL's "read-only transaction" (25006) to
// store.ErrReadOnly.
func readOnlyErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25006" {
		return store.ErrReadOnly
	}
	return err
}
