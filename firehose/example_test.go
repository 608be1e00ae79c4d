package firehose_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/cistern-dev/cistern/firehose"
)

// This example follows a relay with a Dispatcher: messages are applied on 16
// workers, in order within each repo, and the cursor saved is the
// dispatcher's watermark, so that a restart skips nothing.
func ExampleClient_Run() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// loadCursor and saveCursor stand for the indexer's durable cursor.
	var saved int64
	loadCursor := func() int64 { return saved }
	saveCursor := func(seq int64) { saved = seq }

	client, err := firehose.New(firehose.Options{
		URL:    "https://bsky.network",
		Logger: log,
	})
	if err != nil {
		log.Error("firehose", "err", err)
		return
	}

	// apply does the work for one message. It must record its outcome
	// durably before returning (an error is only logged), and tolerate
	// seeing a message again after a restart.
	apply := func(ctx context.Context, m *firehose.Message) error {
		switch m.Kind {
		case firehose.KindCommit:
			_ = m.Commit // verify and apply, or buffer m.Body while the repo backfills
		case firehose.KindIdentity, firehose.KindAccount, firehose.KindSync:
			// update the repo's state
		}
		return nil
	}
	d := firehose.NewDispatcher(16, 64, apply)
	d.SetLogger(log)

	var wg sync.WaitGroup
	wg.Go(func() { d.Run(ctx) })
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				saveCursor(d.Watermark())
			case <-ctx.Done():
				return
			}
		}
	})

	err = client.Run(ctx, loadCursor(), d.Dispatch)
	if !errors.Is(err, context.Canceled) {
		log.Error("firehose stopped", "err", err)
	}
	stop()
	wg.Wait()
	saveCursor(d.Watermark()) // workers have stopped: this is final
}
