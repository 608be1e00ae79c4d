package store

// HeldCounter is implemented by the read transactions of stores that can
// count the live commits held (buffered) for repos that are not synced.
// It is optional: the Indexer reports zero held commits for a store whose
// transactions do not implement it. boltstore implements it.
type HeldCounter interface {
	// HeldCommits returns how many live commits are held, over every repo,
	// and how many bytes they take in the store. It may visit every held
	// commit.
	HeldCommits() (commits, bytes int64, err error)
}
