package firehose

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/fxamacker/cbor/v2"
)

// Message kinds: the header "t" values of subscribeRepos that this package
// decodes.
const (
	KindCommit   = "#commit"
	KindSync     = "#sync"
	KindIdentity = "#identity"
	KindAccount  = "#account"
	KindInfo     = "#info"
)

// Names of upstream conditions, as carried by error frames (UpstreamError.Name)
// and #info messages (Info.Name).
const (
	// NameFutureCursor is the error a host sends when the requested cursor is
	// ahead of its stream.
	NameFutureCursor = "FutureCursor"
	// NameConsumerTooSlow is the error a host sends before dropping a
	// consumer that does not keep up.
	NameConsumerTooSlow = "ConsumerTooSlow"
	// NameOutdatedCursor is the #info a host sends when the requested cursor
	// is older than what it retains; the stream starts at its oldest
	// retained message, so messages in between were missed.
	NameOutdatedCursor = "OutdatedCursor"
)

var (
	// ErrMalformedFrame is wrapped by every *FrameError: the frame or body
	// is not a valid subscribeRepos message.
	ErrMalformedFrame = errors.New("firehose: malformed frame")
	// ErrUnknownKind is returned (wrapped) by DecodeFrame and DecodeBody for a
	// well-formed header with an op or "t" this package does not know. The
	// protocol says such frames are to be ignored; Client skips and counts
	// them.
	ErrUnknownKind = errors.New("firehose: unknown message kind")
	// ErrFutureCursor is matched (errors.Is) by an *UpstreamError named
	// FutureCursor: the cursor asked for is ahead of the host's stream.
	ErrFutureCursor = errors.New("firehose: cursor is in the future")
)

// FrameError says why a frame or body could not be decoded. It matches
// ErrMalformedFrame with errors.Is and unwraps to the decoder's error, if
// any.
type FrameError struct {
	// Kind is the header's "t", when the header was readable.
	Kind string
	// Reason says what is wrong, in a few words.
	Reason string
	// Err is the underlying decoder error, or nil.
	Err error
}

func (e *FrameError) Error() string {
	s := "firehose: malformed frame"
	if e.Kind != "" {
		s += " " + e.Kind
	}
	s += ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether target is ErrMalformedFrame.
func (e *FrameError) Is(target error) bool { return target == ErrMalformedFrame }

// Unwrap returns the underlying decoder error.
func (e *FrameError) Unwrap() error { return e.Err }

// UpstreamError is an error frame (header op -1) sent by the host. Its body
// is {"error": Name, "message": Message}. An UpstreamError named
// FutureCursor matches ErrFutureCursor with errors.Is.
type UpstreamError struct {
	// Name is the error name, such as FutureCursor or ConsumerTooSlow.
	Name string
	// Message is the optional human-readable explanation.
	Message string
}

func (e *UpstreamError) Error() string {
	if e.Message == "" {
		return "firehose: upstream error " + e.Name
	}
	return "firehose: upstream error " + e.Name + ": " + e.Message
}

// Is reports whether target is ErrFutureCursor and e is named FutureCursor.
func (e *UpstreamError) Is(target error) bool {
	return target == ErrFutureCursor && e.Name == NameFutureCursor
}

// Message is one decoded subscribeRepos message. Exactly one of Commit,
// Sync, Identity, Account and Info is set, matching Kind.
type Message struct {
	// Seq is the stream sequence number; 0 for #info, which has none. For
	// every other kind it is at least 1.
	Seq int64
	// Kind is the header's "t": one of the Kind constants.
	Kind string
	// DID is the repo the message is about (the commit's "repo", the "did"
	// of the others); empty for #info, never empty otherwise.
	DID string

	// The payload: exactly the one matching Kind is non-nil.
	Commit   *comatproto.SyncSubscribeRepos_Commit
	Sync     *comatproto.SyncSubscribeRepos_Sync
	Identity *comatproto.SyncSubscribeRepos_Identity
	Account  *comatproto.SyncSubscribeRepos_Account
	Info     *comatproto.SyncSubscribeRepos_Info

	// Body is the raw CBOR body of the frame, which DecodeBody(Kind, Body)
	// turns back into an equal Message. It aliases the frame given to
	// DecodeFrame (the Client hands out a fresh frame for every message);
	// copy it to keep it beyond the frame's buffer.
	Body []byte
}

// frameHeader is the first CBOR value of a frame. Op is a pointer so that a
// missing op is told apart from op 0.
type frameHeader struct {
	Op *int64 `cbor:"op"`
	T  string `cbor:"t"`
}

// errorBody is the body of an error frame.
type errorBody struct {
	Error   string `cbor:"error"`
	Message string `cbor:"message"`
}

// decMode decodes headers and error bodies. It is created once, on first
// use, and never changes.
var decMode = sync.OnceValues(func() (cbor.DecMode, error) {
	return cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: 1024,
		MaxMapPairs:      1024,
	}.DecMode()
})

// DecodeFrame decodes one subscribeRepos frame: a CBOR header followed by a
// CBOR body and nothing else.
//
// It returns the Message for a message frame (op 1) of a known kind. For an
// error frame (op -1) it returns a nil Message and an *UpstreamError. For a
// well-formed header of an unknown op or kind it returns an error wrapping
// ErrUnknownKind. Anything else that is not a valid frame yields a
// *FrameError (matching ErrMalformedFrame). DecodeFrame never panics.
//
// The returned Message's Body aliases data.
func DecodeFrame(data []byte) (*Message, error) {
	dm, err := decMode()
	if err != nil {
		return nil, &FrameError{Reason: "cbor decoder", Err: err}
	}
	var h frameHeader
	body, err := dm.UnmarshalFirst(data, &h)
	if err != nil {
		return nil, &FrameError{Reason: "header", Err: err}
	}
	if h.Op == nil {
		return nil, &FrameError{Kind: h.T, Reason: "header has no op"}
	}
	switch *h.Op {
	case 1:
		if h.T == "" {
			return nil, &FrameError{Reason: "message header has no t"}
		}
		return DecodeBody(h.T, body)
	case -1:
		var eb errorBody
		rest, err := dm.UnmarshalFirst(body, &eb)
		if err != nil {
			return nil, &FrameError{Reason: "error body", Err: err}
		}
		if len(rest) != 0 {
			return nil, &FrameError{Reason: fmt.Sprintf("%d trailing bytes after error body", len(rest))}
		}
		if eb.Error == "" {
			return nil, &FrameError{Reason: "error body has no error name"}
		}
		return nil, &UpstreamError{Name: eb.Error, Message: eb.Message}
	default:
		return nil, fmt.Errorf("%w: op %d", ErrUnknownKind, *h.Op)
	}
}

// DecodeBody decodes the body of a message of the given kind, as found in
// Message.Body, and checks what the indexer relies on: the body is one CBOR
// value with no trailing bytes, a message with a sequence number has Seq >= 1
// and a non-empty DID, and a commit has no null op.
//
// An unknown kind yields an error wrapping ErrUnknownKind; an invalid body a
// *FrameError. The returned Message's Body is body. DecodeBody never panics.
func DecodeBody(kind string, body []byte) (m *Message, err error) {
	// The generated decoders are not ours; should one of them panic on some
	// input, report it as a malformed frame rather than take the process down.
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, &FrameError{Kind: kind, Reason: fmt.Sprintf("decoder panic: %v", r)}
		}
	}()

	r := bytes.NewReader(body)
	m = &Message{Kind: kind, Body: body}
	switch kind {
	case KindCommit:
		c := new(comatproto.SyncSubscribeRepos_Commit)
		if err := c.UnmarshalCBOR(r); err != nil {
			return nil, &FrameError{Kind: kind, Reason: "body", Err: err}
		}
		for i, op := range c.Ops {
			if op == nil {
				return nil, &FrameError{Kind: kind, Reason: fmt.Sprintf("op %d is null", i)}
			}
		}
		m.Commit, m.Seq, m.DID = c, c.Seq, c.Repo
	case KindSync:
		s := new(comatproto.SyncSubscribeRepos_Sync)
		if err := s.UnmarshalCBOR(r); err != nil {
			return nil, &FrameError{Kind: kind, Reason: "body", Err: err}
		}
		m.Sync, m.Seq, m.DID = s, s.Seq, s.Did
	case KindIdentity:
		id := new(comatproto.SyncSubscribeRepos_Identity)
		if err := id.UnmarshalCBOR(r); err != nil {
			return nil, &FrameError{Kind: kind, Reason: "body", Err: err}
		}
		m.Identity, m.Seq, m.DID = id, id.Seq, id.Did
	case KindAccount:
		a := new(comatproto.SyncSubscribeRepos_Account)
		if err := a.UnmarshalCBOR(r); err != nil {
			return nil, &FrameError{Kind: kind, Reason: "body", Err: err}
		}
		m.Account, m.Seq, m.DID = a, a.Seq, a.Did
	case KindInfo:
		in := new(comatproto.SyncSubscribeRepos_Info)
		if err := in.UnmarshalCBOR(r); err != nil {
			return nil, &FrameError{Kind: kind, Reason: "body", Err: err}
		}
		m.Info = in
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	if r.Len() != 0 {
		return nil, &FrameError{Kind: kind, Reason: fmt.Sprintf("%d trailing bytes after body", r.Len())}
	}
	if kind != KindInfo {
		if m.Seq < 1 {
			return nil, &FrameError{Kind: kind, Reason: fmt.Sprintf("seq %d is not positive", m.Seq)}
		}
		if m.DID == "" {
			return nil, &FrameError{Kind: kind, Reason: "no did"}
		}
	}
	return m, nil
}
