package boltstore

import "github.com/cistern-dev/cistern/store"

var _ store.HeldCounter = (*tx)(nil)

// HeldCommits counts the buffered live commits and the bytes of their
// stored values, visiting each once.
func (t *tx) HeldCommits() (commits, bytes int64, err error) {
	err = t.buffer.ForEach(func(k, v []byte) error {
		commits++
		bytes += int64(len(k) + len(v))
		return nil
	})
	return commits, bytes, err
}
