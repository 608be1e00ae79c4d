package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// Collection is the statusphere record type: {"status": "🦋", "createdAt": "..."}.
const Collection = "xyz.statusphere.status"

// Spec is the filter statusphere needs: every repo that has posted a status
// (the signal) is tracked, and only statuses are stored.
var Spec = filter.Spec{Signals: []string{Collection}, Collections: []string{Collection}}

// Status is one user's latest status, as the page and /api/statuses show it.
type Status struct {
	DID       string    `json:"did"`
	Handle    string    `json:"handle"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"createdAt"`
	URI       string    `json:"uri"`
}

// App is the statusphere web app over an Indexer. It keeps each user's
// latest status in memory, fed by one subscription to the event log, and
// pushes changes to browsers over server-sent events.
type App struct {
	ix  *cistern.Indexer
	log *slog.Logger

	mu       sync.Mutex
	statuses map[string]Status // by DID
	clients  map[chan Status]struct{}
	ready    chan struct{} // closed once the replay has caught up
	readyOK  bool
}

// NewApp returns an App over ix, which must index at least Spec.
func NewApp(ix *cistern.Indexer, log *slog.Logger) *App {
	if log == nil {
		log = slog.Default()
	}
	return &App{ix: ix, log: log, statuses: map[string]Status{}, clients: map[chan Status]struct{}{}, ready: make(chan struct{})}
}

// Run follows the event log until ctx ends: it replays every retained
// status event, then applies live ones as they are committed. For each
// record event it asks the Indexer for the user's newest status (by record
// key, so deletes and edits fall back correctly) rather than trusting the
// event alone.
func (a *App) Run(ctx context.Context) error {
	newest, err := a.newestEvent(ctx)
	if err != nil {
		return err
	}
	if newest == 0 {
		a.markReady()
	}
	sub, err := a.ix.Subscribe(ctx, stream.SubscribeOptions{
		Collections: []string{Collection},
		Kinds:       []store.EventKind{store.KindRecord, store.KindIdentity},
	})
	if err != nil {
		return fmt.Errorf("statusphere: subscribe: %w", err)
	}
	defer sub.Close()
	// The subscription's position counts the events its filter skips too:
	// Ready must not wait for a status event that will never come when the
	// newest event at start is of another kind or collection.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	events := sub.Events()
	for events != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			switch ev.Kind {
			case store.KindRecord:
				if err := a.refresh(ctx, ev.DID); err != nil && ctx.Err() == nil {
					a.log.Warn("statusphere: refresh", "did", ev.DID, "err", err)
				}
			case store.KindIdentity:
				a.setHandle(ev.DID, ev.Handle)
			}
			if ev.ID >= newest {
				a.markReady()
			}
		case <-tick.C:
			if sub.Position() >= newest {
				a.markReady()
			}
		}
	}
	if err := sub.Err(); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return fmt.Errorf("statusphere: subscription: %w", err)
	}
	return nil
}

func (a *App) newestEvent(ctx context.Context) (uint64, error) {
	st, err := a.ix.Stats(ctx)
	if err != nil {
		return 0, err
	}
	return st.NewestEvent, nil
}

func (a *App) markReady() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.readyOK {
		a.readyOK = true
		close(a.ready)
	}
}

// Ready is closed once the statuses stored when Run started are loaded.
func (a *App) Ready() <-chan struct{} { return a.ready }

// refresh reloads a user's newest status from the Indexer and tells the
// browsers when it changed.
func (a *App) refresh(ctx context.Context, did string) error {
	page, err := a.ix.ListRecords(ctx, did, Collection, cistern.ListOptions{Limit: 1})
	if errors.Is(err, cistern.ErrNotTracked) {
		page, err = &cistern.RecordPage{}, nil // untracked since, with its records: no status
	}
	if err != nil {
		return err
	}
	if len(page.Records) == 0 {
		a.mu.Lock()
		_, had := a.statuses[did]
		delete(a.statuses, did)
		a.mu.Unlock()
		if had {
			a.broadcast(Status{DID: did})
		}
		return nil
	}
	rec := page.Records[0]
	raw, err := rec.JSON()
	if err != nil {
		return err
	}
	var v struct {
		Status    string `json:"status"`
		CreatedAt string `json:"createdAt"`
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.Status == "" || len(v.Status) > 32 {
		return fmt.Errorf("%s: not a valid status record", rec.URI())
	}
	created, err := time.Parse(time.RFC3339Nano, v.CreatedAt)
	if err != nil {
		created = time.Now().UTC()
	}
	s := Status{DID: did, Handle: a.handleOf(ctx, did), Status: v.Status, CreatedAt: created, URI: rec.URI()}
	a.mu.Lock()
	old, had := a.statuses[did]
	a.statuses[did] = s
	a.mu.Unlock()
	if !had || old != s {
		a.broadcast(s)
	}
	return nil
}

// handleOf returns the handle the Indexer resolved for did, or the DID.
func (a *App) handleOf(ctx context.Context, did string) string {
	if r, err := a.ix.Repo(ctx, did); err == nil && r.Handle != "" && r.Handle != "handle.invalid" {
		return r.Handle
	}
	return did
}

func (a *App) setHandle(did, handle string) {
	if handle == "" || handle == "handle.invalid" {
		return
	}
	a.mu.Lock()
	s, ok := a.statuses[did]
	if ok && s.Handle != handle {
		s.Handle = handle
		a.statuses[did] = s
	}
	a.mu.Unlock()
	if ok {
		a.broadcast(s)
	}
}

// Statuses returns every user's latest status, newest first.
func (a *App) Statuses() []Status {
	a.mu.Lock()
	out := make([]Status, 0, len(a.statuses))
	for _, s := range a.statuses {
		out = append(out, s)
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y Status) int {
		if c := y.CreatedAt.Compare(x.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(x.DID, y.DID)
	})
	return out
}

// broadcast sends s to every browser; one that is not keeping up is
// dropped (its EventSource reconnects and reloads the list).
func (a *App) broadcast(s Status) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ch := range a.clients {
		select {
		case ch <- s:
		default:
			delete(a.clients, ch)
			close(ch)
		}
	}
}

func (a *App) addClient() chan Status {
	ch := make(chan Status, 32)
	a.mu.Lock()
	a.clients[ch] = struct{}{}
	a.mu.Unlock()
	return ch
}

func (a *App) removeClient(ch chan Status) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.clients[ch]; ok {
		delete(a.clients, ch)
		close(ch)
	}
}

// Handler serves the page at /, the statuses as JSON at /api/statuses and
// live updates as server-sent events at /events (event "status", data a
// Status; a Status with an empty "status" means the user has none left).
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.servePage)
	mux.HandleFunc("GET /api/statuses", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.Statuses())
	})
	mux.HandleFunc("GET /events", a.serveEvents)
	return mux
}

func (a *App) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := a.addClient()
	defer a.removeClient(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = fmt.Fprint(w, ": connected\n\n")
	fl.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			_, _ = fmt.Fprint(w, ": keepalive\n\n")
		case s, ok := <-ch:
			if !ok {
				return
			}
			b, _ := json.Marshal(s)
			_, _ = fmt.Fprintf(w, "event: status\ndata: %s\n\n", b)
		}
		fl.Flush()
	}
}
