package cistern_test

import (
	"os"
	"testing"

	"github.com/cistern-dev/cistern/store/pgstore/pgtest"
)

// TestMain stops the throwaway PostgreSQL server the tests on pgstore
// started, if any.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
