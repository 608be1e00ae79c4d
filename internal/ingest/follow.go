package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"

	"github.com/cistern-dev/cistern/firehose"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/verify"
)

// MetaCursorPrefix prefixes the meta key of each source's saved cursor
// (the source's URL follows).
const MetaCursorPrefix = "firehose/cursor/"

// firehoseQueue sizes the dispatcher's global bound on messages accepted
// but not yet applied: FirehoseWorkers × (firehoseQueue+1) in all, from any
// mix of repos.
const firehoseQueue = 4

// Cursor returns the saved cursor of source src: the sequence number of
// the last message applied, or 0 when the source has none (a first start
// is live).
func (in *Ingest) Cursor(ctx context.Context, src string) (int64, error) {
	var cursor int64
	err := in.st.View(ctx, func(tx store.ReadTx) error {
		v, err := tx.Meta(MetaCursorPrefix + src)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		cursor, err = strconv.ParseInt(string(v), 10, 64)
		return err
	})
	return cursor, err
}

// SetCursor saves cursor as source src's cursor, for the next follow of
// the source to resume after it. A follow running meanwhile saves its own.
func (in *Ingest) SetCursor(ctx context.Context, src string, cursor int64) error {
	return in.write(ctx, func(tx store.Tx) error {
		return tx.PutMeta(MetaCursorPrefix+src, []byte(strconv.FormatInt(cursor, 10)))
	})
}

// follow runs one firehose source until ctx ends: frames are dispatched to
// workers by repo, and the cursor watermark is saved every CursorInterval
// and on the way out.
func (in *Ingest) follow(ctx context.Context, src string) error {
	cursorKey := MetaCursorPrefix + src
	cursor, err := in.Cursor(ctx, src)
	if err != nil {
		return fmt.Errorf("read cursor: %w", err)
	}
	if cursor == 0 {
		// No cursor: this source starts live. Repos synced before (in a run
		// that saw no message of this source) may have missed commits made
		// since: resync them. The diff emits only what changed.
		if err := in.repos.ResyncAll(ctx); err != nil {
			return fmt.Errorf("resync before a first live start: %w", err)
		}
	}
	client, err := firehose.New(firehose.Options{
		URL:          src,
		Name:         src,
		HTTPClient:   in.cfg.HTTPClient,
		Logger:       in.log,
		MaxFrameSize: in.cfg.MaxFrameSize,
		OnInfo: func(info *comatproto.SyncSubscribeRepos_Info) {
			if info.Name == firehose.NameOutdatedCursor {
				// Messages between our cursor and the oldest the source
				// still has are gone: every synced repo may have missed
				// commits, so each is resynced (the diff emits only what
				// changed).
				in.log.Warn("firehose cursor is older than the source's history; resyncing every synced repo", "source", src, "cursor", cursor)
				if err := in.repos.ResyncAll(ctx); err != nil && ctx.Err() == nil {
					in.log.Error("resync after outdated cursor", "source", src, "err", err)
				}
			}
		},
	})
	if err != nil {
		return err
	}
	in.metrics.sources.follow(src, client)
	defer in.metrics.sources.unfollow(src, client)
	disp := firehose.NewDispatcher(in.cfg.Workers, firehoseQueue, func(ctx context.Context, m *firehose.Message) error {
		return in.HandleMessage(ctx, src, m)
	})

	// The dispatcher's workers must finish their messages even as ctx
	// ends, so that the last watermark is saved; they get their own
	// context, cancelled once the client stopped feeding them.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		disp.Run(workCtx)
	}()
	var saveMu sync.Mutex
	saved := cursor
	saveAt := func(c context.Context, wm int64) error {
		saveMu.Lock()
		defer saveMu.Unlock()
		if wm <= saved {
			return nil
		}
		held := false
		if err := in.write(c, func(tx store.Tx) error {
			// A pipelined live write that failed and whose repo is not yet
			// queued for a resync: the cursor must not pass it durably.
			// (Its failure is counted before this closure runs again in
			// the same batch: the writer reports a failed write first.)
			if held = in.pipe.anyBroken(); held {
				return nil
			}
			return tx.PutMeta(cursorKey, []byte(strconv.FormatInt(wm, 10)))
		}); err != nil {
			return err
		}
		if held {
			return nil
		}
		saved = wm
		in.metrics.setCursor(src, wm)
		return nil
	}
	save := func(c context.Context) {
		if err := saveAt(c, disp.Watermark()); err != nil {
			in.log.Warn("save firehose cursor", "source", src, "err", err)
		}
	}
	started := cursor != 0
	clientDone := make(chan struct{})
	go func() {
		defer wg.Done()
		t := time.NewTicker(in.cfg.CursorInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				save(workCtx)
			case <-clientDone:
				return
			}
		}
	}()
	handle := func(ctx context.Context, m *firehose.Message) error {
		in.metrics.observeFrame(src, m)
		if !started && m.Seq > 0 {
			// Anchor the live start at once, so that a restart, however
			// soon, resumes here rather than live again.
			if err := saveAt(ctx, m.Seq-1); err != nil {
				return fmt.Errorf("save the first firehose cursor: %w", err)
			}
			started = true
		}
		return disp.Dispatch(ctx, m)
	}
	var runErr error
	for from := cursor; ; {
		runErr = client.Run(ctx, from, handle)
		if !errors.Is(runErr, firehose.ErrFrameTooLarge) || ctx.Err() != nil {
			break
		}
		in.metrics.rejected(verify.RejectTooLarge)
		// The source would send the same frame again: go on after it. Its
		// repo is resynced when its next commit does not chain (the
		// frame's repo is unknown: it was not read). Sequence numbers may
		// have gaps: if the frame is further on, the next pass skips the
		// next number, and so on.
		if last := max(client.Stats().LastSeq, from); last > 0 {
			from = last + 1
			in.log.Error("firehose frame over the size limit skipped", "source", src, "seq", from, "err", runErr)
			continue
		}
		// Live start, nothing received yet: no number to skip to. Connect
		// live again a little later, past that frame.
		in.log.Error("firehose frame over the size limit at a live start; reconnecting live", "source", src, "err", runErr)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	close(clientDone)
	disp.Wait(workCtx)
	stopWork()
	wg.Wait()
	save(context.Background())
	if ctx.Err() != nil {
		return nil
	}
	if errors.Is(runErr, firehose.ErrFutureCursor) {
		// The source's sequence is behind our cursor: it was reset, or
		// another service answers at its address. Our cursor means nothing
		// there: forget it and start live again, which resyncs every
		// synced repo (see above), so nothing it holds is missed.
		in.log.Warn("firehose source is behind our cursor; starting live again and resyncing", "source", src, "cursor", saved)
		if err := in.write(ctx, func(tx store.Tx) error {
			return tx.PutMeta(cursorKey, []byte("0"))
		}); err != nil {
			return fmt.Errorf("forget the cursor after FutureCursor: %w", err)
		}
		return errRestartLive
	}
	return runErr
}

// errRestartLive asks Follow to follow the source again, from its
// live tip.
var errRestartLive = errors.New("cistern: follow the source again from live")

// Follow follows one firehose source until ctx ends, starting it again
// when follow asks (see errRestartLive). It returns nil when ctx ends, after
// saving the source's cursor.
// Restarts are spaced by at least a second, doubling up to a minute while
// they keep coming, since each resyncs every synced repo.
func (in *Ingest) Follow(ctx context.Context, src string) error {
	wait := time.Second
	for {
		err := in.follow(ctx, src)
		if !errors.Is(err, errRestartLive) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}
