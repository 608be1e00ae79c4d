// Package jetstream serves cistern's event log in the protocol of
// Jetstream (github.com/bluesky-social/jetstream), so that apps and
// libraries written for Jetstream read cistern's verified, filtered data
// unchanged, with replay.
//
// A Handler is an http.Handler for Jetstream's GET /subscribe WebSocket. It
// takes Jetstream's query parameters: wantedCollections (repeatable, at most
// 100, an NSID or a prefix ending in ".*"), wantedDids (at most 10,000),
// cursor (unix microseconds), compress=true or the Socket-Encoding: zstd
// header (each message then a binary frame compressed with zstd and
// Jetstream's dictionary, see Dictionary), requireHello and
// maxMessageSizeBytes. A client may replace its filter at any time with an
// options_update message. Events are Jetstream's JSON objects (see
// AppendEvent): commit, identity and account, each with time_us.
//
// The handler reads the log through the public subscription API of package
// stream: a connection is one stream.Subscription, replay then live, with
// no gap and no duplicate between the two. Filters apply as Jetstream
// applies them: wantedDids to every event, wantedCollections to commits
// only (identity and account events pass).
//
// # Cursors
//
// time_us is the time cistern wrote the event, in unix microseconds.
// cistern's writer stamps event times strictly increasing, to the
// microsecond, in event id order, so time_us orders events exactly and a
// cursor names one position of the log: the stream resumes with the first
// event whose time_us is greater than the cursor. A client that reconnects
// with the last time_us it received (as Jetstream clients do) gets neither
// a gap nor a duplicate. The cursor is found through the store's time index
// (store.ReadTx.EventAtTime), without scanning the log.
//
// A cursor older than the retained log starts from the oldest retained
// event, as Jetstream does; the handler counts it in
// cistern_jetstream_outdated_cursors_total (the same holds when retention
// overtakes a slow connection). cistern's own /stream refuses such a cursor
// instead. A cursor in the future, or none, means live only.
//
// # Errors and slow clients
//
// A bad parameter is answered before the upgrade with 400 and
// {"error":"InvalidRequest","message":"…"} naming the parameter. An invalid
// options_update closes the connection with status 1008 (policy violation)
// and the reason. A client that stops reading is disconnected once a write
// takes longer than Options.WriteTimeout: nothing is buffered on its behalf
// beyond one subscription's bound, and it resumes from its cursor.
package jetstream
