package boltstore_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store/boltstore"
)

// A file held by another open is refused with an error that says so, not
// bbolt's bare "timeout".
func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	db, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = boltstore.Open(path, &boltstore.Options{Timeout: 50 * time.Millisecond})
	var le *boltstore.LockedError
	if !errors.As(err, &le) || !errors.Is(err, boltstore.ErrLocked) || le.Path != path {
		t.Fatalf("second Open = %v; want a *LockedError for %s", err, path)
	}
	if msg := err.Error(); !strings.Contains(msg, "locked by another process") || !strings.Contains(msg, path) {
		t.Errorf("error %q does not say the file is locked by another process", msg)
	}
	// Once the holder closes, the file opens.
	db.Close()
	db2, err := boltstore.Open(path, &boltstore.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	db2.Close()
}
