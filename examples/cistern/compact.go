package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactStore copies the bbolt file src into a new file dst, leaving out
// the free pages: bbolt never shrinks its file, so space freed by deleted
// records, pruned events and drained held commits is only given back this
// way. src must not be open (stop the server first); dst must not exist.
// The caller then replaces src with dst.
func compactStore(src, dst string, out io.Writer) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("compact: %s already exists; name a new file", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("compact: %w", err)
	}
	before, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	from, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("compact: %s is in use; stop the server first", src)
	}
	if err != nil {
		return fmt.Errorf("compact: open %s: %w", src, err)
	}
	defer from.Close()
	to, err := bolt.Open(dst, before.Mode().Perm(), &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("compact: create %s: %w", dst, err)
	}
	if err := bolt.Compact(to, from, 64<<20); err != nil {
		to.Close()
		_ = os.Remove(dst)
		return fmt.Errorf("compact: %w", err)
	}
	if err := to.Close(); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("compact: %w", err)
	}
	after, err := os.Stat(dst)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	fmt.Fprintf(out, "cistern: compacted %s (%d bytes) into %s (%d bytes); to use it: mv %s %s\n",
		src, before.Size(), dst, after.Size(), dst, src)
	return nil
}
