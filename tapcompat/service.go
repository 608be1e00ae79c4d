package tapcompat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/internal/wsserve"
	"github.com/cistern-dev/cistern/store"
)

// Consumer names of the two delivery targets. Fire-and-forget and acked
// /channel delivery share one position.
const (
	ChannelConsumer = "tap.channel"
	WebhookConsumer = "tap.webhook"
)

// Mode is how events are delivered (tap's outbox modes).
type Mode string

// The delivery modes.
const (
	// ModeAck delivers over /channel and waits for {"type":"ack","id":N}.
	ModeAck Mode = "websocket-ack"
	// ModeFireAndForget delivers over /channel and counts an event acked
	// once it is written to a connection (tap's --disable-acks).
	ModeFireAndForget Mode = "fire-and-forget"
	// ModeWebhook POSTs each event to Options.WebhookURL; a 2xx answer is
	// the ack. /channel is refused.
	ModeWebhook Mode = "webhook"
)

// Options configure a Service. Zero values mean the defaults.
type Options struct {
	// WebhookURL, when set, selects webhook delivery (tap's
	// TAP_WEBHOOK_URL): each event is POSTed as JSON, a 2xx answer
	// acknowledges it, anything else is retried with backoff.
	WebhookURL string
	// DisableAcks selects fire-and-forget delivery on /channel (tap's
	// TAP_DISABLE_ACKS). Ignored with WebhookURL.
	DisableAcks bool
	// AdminPassword is sent to the webhook as Basic auth (user "admin"),
	// as tap does. Checking it on requests is the HTTP server's job
	// (httpapi.Options.AdminPassword).
	AdminPassword string
	// RetryTimeout is how long an event sent on /channel may stay
	// unacknowledged before it is sent again (tap's TAP_RETRY_TIMEOUT).
	// Events of a closed connection are sent again at once. Default 60s.
	RetryTimeout time.Duration
	// Window bounds events read and not yet acknowledged (tap's outbox
	// capacity). Default 10,000.
	Window int
	// WebhookParallelism is how many webhook POSTs may be under way at
	// once. Default 16.
	WebhookParallelism int
	// WebhookTimeout bounds one POST. Default 30s.
	WebhookTimeout time.Duration
	// WebhookMinBackoff and WebhookMaxBackoff bound the wait between
	// retries of a failed POST, doubling from the first to the second.
	// Defaults 250ms and 10s.
	WebhookMinBackoff, WebhookMaxBackoff time.Duration
	// HTTPClient posts to the webhook. Default: a client of its own.
	HTTPClient *http.Client
	// SaveInterval is how often delivery positions are stored when they
	// moved. Default 200ms.
	SaveInterval time.Duration
	// PingInterval is how often /channel connections are pinged; a client
	// that does not answer within WriteTimeout is disconnected and its
	// unacknowledged events go to other connections. Default 30s.
	PingInterval time.Duration
	// WriteTimeout bounds writing one frame to a /channel client. Default
	// 10s.
	WriteTimeout time.Duration
	// Sources are the indexer's firehose sources (Config.Sources, or
	// RelayURL); /stats/cursors reports the cursor of the first.
	Sources []string
	// Logger receives delivery failures. Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.WebhookParallelism <= 0 {
		o.WebhookParallelism = 16
	}
	if o.WebhookTimeout <= 0 {
		o.WebhookTimeout = 30 * time.Second
	}
	if o.WebhookMinBackoff <= 0 {
		o.WebhookMinBackoff = 250 * time.Millisecond
	}
	if o.WebhookMaxBackoff <= 0 {
		o.WebhookMaxBackoff = 10 * time.Second
	}
	if o.WebhookMaxBackoff < o.WebhookMinBackoff {
		o.WebhookMaxBackoff = o.WebhookMinBackoff
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.PingInterval <= 0 {
		o.PingInterval = wsserve.DefaultPingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = wsserve.DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Service serves tap's protocol over an Indexer: the /channel WebSocket
// (acked or fire-and-forget), webhook delivery, and tap's read endpoints.
// Delivery runs on one Outbox, a durable consumer of the event log named
// ChannelConsumer or WebhookConsumer.
//
// The host runs it: New, then Run in a goroutine until its context ends
// (before closing the Indexer), and mounts Register's routes on its HTTP
// server behind its admin check. A Service is safe for concurrent use.
type Service struct {
	ix     *cistern.Indexer
	opts   Options
	mode   Mode
	outbox *Outbox
	log    *slog.Logger

	mu      sync.Mutex
	runs    int // Run calls under way
	clients atomic.Int64
}

// New returns a Service over ix. It starts nothing: call Run.
func New(ix *cistern.Indexer, opts Options) (*Service, error) {
	opts = opts.withDefaults()
	s := &Service{ix: ix, opts: opts, log: opts.Logger}
	name := ChannelConsumer
	retry := opts.RetryTimeout
	switch {
	case opts.WebhookURL != "":
		s.mode, name, retry = ModeWebhook, WebhookConsumer, -1
	case opts.DisableAcks:
		s.mode, retry = ModeFireAndForget, -1
	default:
		s.mode = ModeAck
	}
	ob, err := NewOutbox(ix, OutboxOptions{
		Name:         name,
		Window:       opts.Window,
		RetryTimeout: retry,
		SaveInterval: opts.SaveInterval,
		Translate:    s.translate,
		Logger:       opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.outbox = ob
	return s, nil
}

// Mode returns the delivery mode.
func (s *Service) Mode() Mode { return s.mode }

// Outbox returns the outbox delivering events.
func (s *Service) Outbox() *Outbox { return s.outbox }

// Run delivers events until ctx ends: it reads the log into the outbox
// and, in webhook mode, posts to the webhook. It returns when everything it
// started has stopped and the delivery position is saved. Run must not be
// called twice at once.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.runs > 0 {
		s.mu.Unlock()
		return errors.New("tapcompat: Run is already running")
	}
	s.runs++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.runs--
		s.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if s.mode == ModeWebhook {
		for i := 0; i < s.opts.WebhookParallelism; i++ {
			wg.Go(func() { s.postLoop(ctx) })
		}
	}
	err := s.outbox.Run(ctx)
	cancel()
	wg.Wait()
	if err != nil {
		s.log.Error("tapcompat: delivery stopped", "err", err)
	}
	return err
}

// repo returns a repo's stored state, or nil when it is not tracked.
func (s *Service) repo(ctx context.Context, did string) (*store.Repo, error) {
	var out *store.Repo
	err := s.ix.Store().View(ctx, func(tx store.ReadTx) error {
		r, err := tx.Repo(did)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		out = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("repo %s: %w", did, err)
	}
	return out, nil
}
