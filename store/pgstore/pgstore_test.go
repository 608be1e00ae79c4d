package pgstore_test

import (
	"os"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/pgstore"
	"github.com/cistern-dev/cistern/store/pgstore/pgtest"
	"github.com/cistern-dev/cistern/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// openTemp opens a store on a schema of its own.
func openTemp(t testing.TB) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), pgtest.Schema(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}
