package cistern

import "errors"

// ErrReadOnly is returned by every method that would write (Track,
// Untrack, Resync, SetFilter, durable consumer acks...) when the Indexer
// was opened with Config.ReadOnly.
var ErrReadOnly = errors.New("cistern: this process is read-only (a replica): writes go to the indexing process")

// ReadOnly reports whether the Indexer was opened with Config.ReadOnly.
func (ix *Indexer) ReadOnly() bool { return ix.cfg.ReadOnly }
