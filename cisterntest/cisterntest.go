// Package cisterntest points a cistern Indexer at an in-process simulated
// network (package testnet), for tests, examples and demos.
//
// One call gives a Config that follows the network:
//
//	net := testnet.New(t)
//	cfg := cisterntest.Config(net, filepath.Join(t.TempDir(), "cistern.db"))
//	cfg.Filter = filter.Spec{Signals: []string{"xyz.statusphere.status"}}
//	ix, err := cistern.Open(cfg)
//
// Left unset, Config.RelayURL and Config.PLCURL mean the production network
// (wss://bsky.network, https://plc.directory), and handle verification
// marks every .test handle handle.invalid: Config sets all three, and an
// HTTP client that refuses any host outside the network, so that a setting
// left to its production default fails at once, naming the URL, instead of
// dialing production.
//
// # Restarts
//
// An in-process network lives and dies with its process: a service that is
// stopped and started again to test what survives a restart (its store,
// its firehose cursor, a durable consumer's position) must follow a network
// that outlives it. Run the simulated network as its own process,
//
//	go run ./examples/testnet -listen 127.0.0.1:2590 -seed 1 -rate 5
//
// which prints one line, READY {"plc":"http://…","pds":"http://…","relay":"http://…"},
// and configure the service with those URLs and SkipHandleVerification:
//
//	cfg := cistern.Config{
//		Path:                   "cistern.db",
//		RelayURL:               "http://127.0.0.1:2590",
//		PLCURL:                 "http://127.0.0.1:2590",
//		SkipHandleVerification: true, // .test handles cannot be checked
//	}
//
// Restart the service as often as the test needs; the network keeps its
// accounts and its relay's replay window (testnet.Options.Retention) across
// them. The -seed flag makes the accounts' DIDs and keys the same on every
// run of the network itself.
//
// Dependencies point down: this package imports cistern and testnet, and
// neither imports it.
package cisterntest

import (
	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/testnet"
)

// Config returns a Config for an Indexer that stores its data at path and
// follows net: RelayURL and PLCURL are the network's, SkipHandleVerification
// is set (.test handles cannot be verified), and HTTPClient sends requests
// to the network's servers only (see testnet.IndexerSettings). Every other
// field is zero, that is, its default: set Filter and anything else on the
// result before calling cistern.Open.
func Config(net *testnet.Network, path string) cistern.Config {
	s := net.IndexerSettings()
	return cistern.Config{
		Path:                   path,
		RelayURL:               s.RelayURL,
		PLCURL:                 s.PLCURL,
		SkipHandleVerification: s.SkipHandleVerification,
		HTTPClient:             s.HTTPClient,
	}
}
