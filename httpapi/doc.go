// Package httpapi serves cistern over HTTP: XRPC queries over the stored
// records, the /stream WebSocket event stream, management and metrics.
//
// Every handler is a plain http.Handler built from a small interface that
// declares what it consumes (for the stream, a Subscriber), so the root
// Indexer, a *stream.Log or a test double can stand behind it. Errors are
// answered as JSON, {"error":"InvalidRequest","message":"…"}, with the
// message naming the problem.
package httpapi
