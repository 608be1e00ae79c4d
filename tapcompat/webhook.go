package tapcompat

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// webhookSender owns the deliveries one webhook worker holds.
type webhookSender struct{ n int }

// postLoop is one webhook worker: it takes a delivery, POSTs it until the
// webhook answers 2xx (the ack), backing off between failures, then takes
// the next. When ctx ends, a delivery not yet acknowledged is given back;
// the stored position never passes it, so the next run posts it again.
func (s *Service) postLoop(ctx context.Context) {
	me := &webhookSender{}
	for {
		d, err := s.outbox.Next(ctx, me)
		if err != nil {
			return
		}
		for attempt := 0; ; attempt++ {
			if attempt > 0 {
				s.outbox.countRetry()
			}
			err := s.post(ctx, d)
			if err == nil {
				s.outbox.Ack(d.ID)
				break
			}
			wait := s.backoff(attempt)
			s.log.Warn("tapcompat: webhook failed; retrying", "id", d.ID, "attempt", attempt+1, "retryIn", wait, "err", err)
			select {
			case <-ctx.Done():
				s.outbox.Requeue(d, me)
				return
			case <-time.After(wait):
			}
		}
	}
}

// backoff is the wait after the attempt-th failure: WebhookMinBackoff
// doubled per failure up to WebhookMaxBackoff, with up to 20% jitter.
func (s *Service) backoff(attempt int) time.Duration {
	d := s.opts.WebhookMinBackoff
	for i := 0; i < attempt && d < s.opts.WebhookMaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.opts.WebhookMaxBackoff)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// post sends one event; any answer but a 2xx is an error.
func (s *Service) post(ctx context.Context, d *Delivery) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.WebhookURL, bytes.NewReader(d.Body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cistern-tapcompat")
	if s.opts.AdminPassword != "" {
		req.SetBasicAuth("admin", s.opts.AdminPassword)
	}
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
