package tapcompat

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// IdentityEvent is the "identity" object of tap's identity events, which
// carry both handle changes and account status changes.
type IdentityEvent struct {
	DID      string `json:"did"`
	Handle   string `json:"handle"`
	IsActive bool   `json:"is_active"`
	// Status is one of tap's account statuses: active, takendown,
	// suspended, deactivated, deleted.
	Status string `json:"status"`
	// State and Error are cistern's additions, set only on the identity
	// event that carries a failed sync (a repo event of the log): the
	// repo's state, "error", and why. tap sends nothing when a resync
	// fails; clients that ignore unknown fields (such as @atproto/tap) see
	// an identity event of the repo, and /info/{did} says the rest.
	State string `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
}

type identityMessage struct {
	ID       uint64         `json:"id"`
	Type     string         `json:"type"`
	Identity *IdentityEvent `json:"identity"`
}

// tapStatuses are the account statuses tap delivers; others (throttled,
// desynchronized, ...) are not account states tap clients know.
var tapStatuses = map[string]bool{
	"active": true, "takendown": true, "suspended": true, "deactivated": true, "deleted": true,
}

// accountStatus is a repo's account status in tap's words.
func accountStatus(r *store.Repo) (active bool, status string) {
	if r == nil || r.State.Active() {
		return true, "active"
	}
	if r.State == store.StateDeleted {
		return false, "deleted"
	}
	return false, r.State.String()
}

// handleOf is the handle tap's clients require (a valid handle): the
// known one, or "handle.invalid".
func handleOf(hs ...string) string {
	for _, h := range hs {
		if _, err := syntax.ParseHandle(h); err == nil {
			return h
		}
	}
	return syntax.HandleInvalid.String()
}

// translate renders an event of the log in tap's JSON, or returns nil for
// an event tap has no form for.
func (s *Service) translate(ctx context.Context, ev *store.Event) ([]byte, error) {
	switch ev.Kind {
	case store.KindRecord:
		// cistern's record form is tap's: same fields, same names.
		b, err := stream.EventJSON(ev)
		if errors.Is(err, stream.ErrInvalidRecord) {
			s.log.Warn("tapcompat: skipping a record event whose value has no JSON form", "id", ev.ID, "err", err)
			return nil, nil
		}
		return b, err
	case store.KindIdentity:
		r, err := s.repo(ctx, ev.DID)
		if err != nil {
			return nil, err
		}
		id := &IdentityEvent{DID: ev.DID}
		var stored string
		if r != nil {
			stored = r.Handle
		}
		id.Handle = handleOf(ev.Handle, stored)
		id.IsActive, id.Status = accountStatus(r)
		return json.Marshal(identityMessage{ID: ev.ID, Type: "identity", Identity: id})
	case store.KindAccount:
		id := &IdentityEvent{DID: ev.DID, IsActive: ev.Active, Status: ev.Status}
		if ev.Active {
			id.Status = "active"
		} else if !tapStatuses[ev.Status] {
			return nil, nil
		}
		r, err := s.repo(ctx, ev.DID)
		if err != nil {
			return nil, err
		}
		var stored string
		if r != nil {
			stored = r.Handle
		}
		id.Handle = handleOf(stored)
		return json.Marshal(identityMessage{ID: ev.ID, Type: "identity", Identity: id})
	case store.KindRepo:
		r, err := s.repo(ctx, ev.DID)
		if err != nil {
			return nil, err
		}
		id := &IdentityEvent{DID: ev.DID, State: ev.Status, Error: ev.Error}
		var stored string
		if r != nil {
			stored = r.Handle
		}
		id.Handle = handleOf(stored)
		id.IsActive, id.Status = accountStatus(r)
		return json.Marshal(identityMessage{ID: ev.ID, Type: "identity", Identity: id})
	}
	return nil, nil
}
