// Package httpapi serves cistern over HTTP: XRPC queries over the stored
// records, the /stream WebSocket event stream, management and metrics.
//
// New builds the whole server over a *cistern.Indexer. The stream endpoint
// stands alone as well: StreamHandler takes a Subscriber, a small interface
// that the Indexer, a *stream.Log or a test double satisfies. Errors are
// answered as JSON, {"error":"InvalidRequest","message":"…"}, with the
// message naming the problem, and the status codes the reference PDS uses.
package httpapi
