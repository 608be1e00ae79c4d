// Package e2e proves cistern against the reference AT Protocol network.
//
// The tests start refnet (../shared/refnet: the reference PLC directory and
// PDS from @atproto/dev-env, with a JSON control API) on free loopback
// ports, run cistern against it with the PDS as firehose source and the PLC
// directory as resolver, drive accounts and writes through the control
// API, and check after each scenario that what cistern answers equals what
// the PDS serves: listRecords and getRecord (same uri, cid and value), the
// event stream folded in id order, and the identity and account state of
// getRepoStatus. For repos the PDS does not serve (unknown, deactivated,
// taken down, deleted), cistern's XRPC error answers must be the PDS's.
//
// They are slow (refnet is a Node.js process) and need refnet installed, so
// they run only when CISTERN_E2E=1; otherwise every test skips, and a plain
// go test ./... stays fast:
//
//	../shared/refnet/setup.sh
//	CISTERN_E2E=1 go test -race -count=1 ./e2e/
//
// The package has no API; everything is in its tests.
package e2e
