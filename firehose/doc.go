// Package firehose follows com.atproto.sync.subscribeRepos on a relay or a
// PDS.
//
// A frame of the stream is one binary WebSocket message holding two CBOR
// values back to back: a header {op, t} and a body. DecodeFrame turns a frame
// into a Message (or an error a caller can branch on); DecodeBody re-decodes
// a body the caller kept, such as a commit buffered while its repo
// backfills.
//
// A Client connects, reads frames and hands each Message to a handler,
// serially and in stream order. It reconnects with jittered exponential
// backoff from the last sequence number it received, so that a reconnect
// neither skips nor repeats a message.
//
// A Dispatcher runs a handler on many workers while keeping the messages of
// one repo (DID) in order, and reports a watermark: the highest sequence
// number at or below which every dispatched message has been handled. That
// watermark, not the sequence number last received, is the cursor that is
// safe to persist. After a restart from a saved watermark, messages above it
// that had already been handled are delivered again: handlers must tolerate
// replays (the indexer skips a commit at or below the repo's stored rev).
//
// Typical wiring (see the Client.Run example):
//
//	d := firehose.NewDispatcher(16, 64, apply)
//	go d.Run(ctx)
//	err := client.Run(ctx, savedCursor, d.Dispatch)
//	// periodically: save(d.Watermark())
package firehose
