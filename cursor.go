package cistern

import (
	"context"
	"fmt"

	"github.com/cistern-dev/cistern/internal/query"
)

// Cursor returns the saved firehose cursor of source (a URL of
// Config.Sources, or Config.RelayURL): the sequence number Run resumes
// after, or 0 when the source has none yet (its first Run starts live).
func (ix *Indexer) Cursor(ctx context.Context, source string) (int64, error) {
	return ix.ing.Cursor(ctx, source)
}

// SetCursor sets the firehose cursor of source: the next Run asks the
// source for the messages after cursor (0 starts live, resyncing every
// synced repo). It is for tools that place the start themselves (a
// benchmark replaying a backlog); it refuses a negative cursor and returns
// ErrRunning while Run is running, whose own saves would overwrite it.
func (ix *Indexer) SetCursor(ctx context.Context, source string, cursor int64) error {
	if cursor < 0 {
		return query.InvalidArg(nil, "cursor %d is negative", cursor)
	}
	ix.runMu.Lock()
	defer ix.runMu.Unlock()
	if ix.closed.Load() {
		return ErrClosed
	}
	if ix.running.Load() {
		return ErrRunning
	}
	if err := ix.ing.SetCursor(ctx, source, cursor); err != nil {
		return fmt.Errorf("cistern: set cursor of %s: %w", source, err)
	}
	return nil
}
