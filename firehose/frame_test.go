package firehose

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
)

func TestDecodeFrame_Kinds(t *testing.T) {
	did := "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	commit := testCommit(7, did, 300)
	sync := &comatproto.SyncSubscribeRepos_Sync{Blocks: []byte{1, 2, 3}, Did: did, Rev: "3l3qo2vutsw2b", Seq: 8, Time: "2024-09-05T06:11:04.870Z"}
	identity := &comatproto.SyncSubscribeRepos_Identity{Did: did, Handle: ptr("alice.test"), Seq: 9, Time: "2024-09-05T06:11:04.870Z"}
	account := &comatproto.SyncSubscribeRepos_Account{Active: false, Did: did, Seq: 10, Status: ptr("takendown"), Time: "2024-09-05T06:11:04.870Z"}
	info := &comatproto.SyncSubscribeRepos_Info{Name: NameOutdatedCursor, Message: ptr("cursor too old")}

	tests := []struct {
		kind    string
		body    cborMarshaler
		seq     int64
		did     string
		payload func(m *Message) any
	}{
		{KindCommit, commit, 7, did, func(m *Message) any { return m.Commit }},
		{KindSync, sync, 8, did, func(m *Message) any { return m.Sync }},
		{KindIdentity, identity, 9, did, func(m *Message) any { return m.Identity }},
		{KindAccount, account, 10, did, func(m *Message) any { return m.Account }},
		{KindInfo, info, 0, "", func(m *Message) any { return m.Info }},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			frame := msgFrame(tt.kind, tt.body)
			m, err := DecodeFrame(frame)
			if err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			if m.Kind != tt.kind || m.Seq != tt.seq || m.DID != tt.did {
				t.Errorf("got kind %q seq %d did %q, want %q %d %q", m.Kind, m.Seq, m.DID, tt.kind, tt.seq, tt.did)
			}
			if got := tt.payload(m).(cborMarshaler); !bytes.Equal(marshalBody(got), marshalBody(tt.body)) || !sameType(got, tt.body) {
				t.Errorf("payload = %+v, want %+v", got, tt.body)
			}
			set := 0
			for _, p := range []bool{m.Commit != nil, m.Sync != nil, m.Identity != nil, m.Account != nil, m.Info != nil} {
				if p {
					set++
				}
			}
			if set != 1 {
				t.Errorf("%d payloads set, want exactly 1", set)
			}
			if want := marshalBody(tt.body); !bytes.Equal(m.Body, want) {
				t.Errorf("Body is not the raw body")
			}

			// A buffered body decodes to the same message.
			again, err := DecodeBody(m.Kind, bytes.Clone(m.Body))
			if err != nil {
				t.Fatalf("DecodeBody: %v", err)
			}
			if got := tt.payload(again).(cborMarshaler); !bytes.Equal(marshalBody(got), marshalBody(tt.body)) || again.Seq != m.Seq || again.DID != m.DID {
				t.Errorf("DecodeBody gave %+v, want %+v", again, m)
			}
		})
	}
}

func sameType(a, b any) bool { return reflect.TypeOf(a) == reflect.TypeOf(b) }

func TestDecodeFrame_ErrorFrames(t *testing.T) {
	tests := []struct {
		name, message string
		future        bool
	}{
		{NameFutureCursor, "Cursor in the future.", true},
		{NameConsumerTooSlow, "", false},
		{"SomethingNew", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeFrame(errFrame(tt.name, tt.message))
			if m != nil {
				t.Fatalf("got message %+v for an error frame", m)
			}
			var ue *UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want *UpstreamError", err)
			}
			if ue.Name != tt.name || ue.Message != tt.message {
				t.Errorf("got %q %q, want %q %q", ue.Name, ue.Message, tt.name, tt.message)
			}
			if got := errors.Is(err, ErrFutureCursor); got != tt.future {
				t.Errorf("errors.Is(err, ErrFutureCursor) = %v, want %v", got, tt.future)
			}
			if errors.Is(err, ErrMalformedFrame) {
				t.Errorf("an error frame is not malformed")
			}
		})
	}
}

func TestDecodeFrame_Malformed(t *testing.T) {
	did := "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	good := commitFrame(5, did)
	hdr := encodeHeader(1, KindCommit)
	nullOp := testCommit(5, did, 8)
	nullOp.Ops = append(nullOp.Ops, nil)

	tests := []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"garbage", []byte{0xff, 0x00, 0x13}},
		{"header is not a map", append([]byte{0x01}, good[len(hdr):]...)},
		{"header without op", append(mustCBOR(map[string]any{"t": KindCommit}), good[len(hdr):]...)},
		{"message without t", append(encodeHeader(1, ""), good[len(hdr):]...)},
		{"header only", hdr},
		{"truncated body", good[:len(good)-3]},
		{"trailing bytes", append(bytes.Clone(good), 0x00)},
		{"body is not a map", append(bytes.Clone(hdr), 0x83, 0x01, 0x02, 0x03)},
		{"body of another kind", msgFrame(KindCommit, &comatproto.SyncSubscribeRepos_Info{Name: "x"})},
		{"seq zero", commitFrame(0, did)},
		{"negative seq", commitFrame(-4, did)},
		{"no did", commitFrame(5, "")},
		{"null op", msgFrame(KindCommit, nullOp)},
		{"identity without seq", msgFrame(KindIdentity, &comatproto.SyncSubscribeRepos_Identity{Did: did})},
		{"error frame without name", append(encodeHeader(-1, ""), mustCBOR(map[string]string{"message": "x"})...)},
		{"error body not a map", append(encodeHeader(-1, ""), 0x01)},
		{"indefinite-length header", append([]byte{0xbf, 0x62, 'o', 'p', 0x01, 0xff}, good[len(hdr):]...)},
		{"duplicate header key", append([]byte{0xa2, 0x62, 'o', 'p', 0x01, 0x62, 'o', 'p', 0x01}, good[len(hdr):]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeFrame(tt.frame)
			if err == nil {
				t.Fatalf("DecodeFrame succeeded: %+v", m)
			}
			if m != nil {
				t.Errorf("got a message with an error")
			}
			if !errors.Is(err, ErrMalformedFrame) {
				t.Errorf("err = %v, want ErrMalformedFrame", err)
			}
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Reason == "" {
				t.Errorf("err = %#v, want a *FrameError with a reason", err)
			}
		})
	}
}

func TestDecodeFrame_UnknownKind(t *testing.T) {
	body := marshalBody(&comatproto.SyncSubscribeRepos_Info{Name: "x"})
	tests := []struct {
		name  string
		frame []byte
	}{
		{"unknown t", append(encodeHeader(1, "#labels"), body...)},
		{"unknown op", append(encodeHeader(2, "#commit"), body...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeFrame(tt.frame)
			if !errors.Is(err, ErrUnknownKind) {
				t.Fatalf("err = %v, want ErrUnknownKind", err)
			}
			if errors.Is(err, ErrMalformedFrame) {
				t.Errorf("unknown kind reported as malformed")
			}
		})
	}
	if _, err := DecodeBody("#labels", body); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("DecodeBody: err = %v, want ErrUnknownKind", err)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	did := "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	f.Add(commitFrame(1, did))
	f.Add(msgFrame(KindSync, &comatproto.SyncSubscribeRepos_Sync{Blocks: []byte{1}, Did: did, Rev: "r", Seq: 2}))
	f.Add(msgFrame(KindIdentity, &comatproto.SyncSubscribeRepos_Identity{Did: did, Seq: 3}))
	f.Add(msgFrame(KindAccount, &comatproto.SyncSubscribeRepos_Account{Did: did, Seq: 4, Status: ptr("deleted")}))
	f.Add(msgFrame(KindInfo, &comatproto.SyncSubscribeRepos_Info{Name: NameOutdatedCursor}))
	f.Add(errFrame(NameFutureCursor, "x"))
	f.Add([]byte{})
	f.Add([]byte{0xa1, 0x62, 'o', 'p', 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeFrame(data)
		if (m == nil) == (err == nil) {
			t.Fatalf("DecodeFrame returned message %v and error %v", m, err)
		}
		if err != nil {
			var ue *UpstreamError
			if !errors.Is(err, ErrMalformedFrame) && !errors.Is(err, ErrUnknownKind) && !errors.As(err, &ue) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		again, err := DecodeBody(m.Kind, m.Body)
		if err != nil {
			t.Fatalf("DecodeBody of a decoded frame: %v", err)
		}
		if again.Seq != m.Seq || again.DID != m.DID || again.Kind != m.Kind {
			t.Fatalf("DecodeBody gave %+v, want %+v", again, m)
		}
	})
}

func BenchmarkDecodeFrame(b *testing.B) {
	// A typical commit: three ops and a couple of KiB of diff blocks.
	frame := msgFrame(KindCommit, testCommit(123456789, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", 2048))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFrame(frame); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}
