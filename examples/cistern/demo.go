package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/testnet"
)

// demoNet is the in-process network of -demo: a PLC directory, a PDS and a
// relay on 127.0.0.1, with a few accounts writing records.
type demoNet struct {
	net      *testnet.Network
	load     *testnet.Load
	accounts []*testnet.Account
	tmp      string
}

// startDemo starts the network, points icfg at it and tracks its accounts.
// Unless -db was given, the store goes to a temporary directory removed at
// exit.
func startDemo(ctx context.Context, cfg *config, icfg *cistern.Config, log *slog.Logger) (*demoNet, error) {
	net, err := testnet.Start(ctx, testnet.Options{Logger: log.With("component", "testnet")})
	if err != nil {
		return nil, err
	}
	d := &demoNet{net: net}
	for _, a := range []struct {
		handle string
		posts  int
		likes  int
	}{{"alice.test", 300, 40}, {"bob.test", 120, 10}, {"carol.test", 40, 5}} {
		acct, err := net.CreateAccount(a.handle, testnet.Records("app.bsky.feed.post", a.posts), testnet.Records("app.bsky.feed.like", a.likes))
		if err != nil {
			d.Close()
			return nil, err
		}
		d.accounts = append(d.accounts, acct)
		if !cfg.FullNetwork {
			icfg.Filter.DIDs = append(icfg.Filter.DIDs, acct.DID().String())
		}
	}
	if !cfg.dbSet {
		if d.tmp, err = os.MkdirTemp("", "cistern-demo-"); err != nil {
			d.Close()
			return nil, err
		}
		icfg.Path = filepath.Join(d.tmp, "cistern.db")
	}
	icfg.RelayURL, icfg.Sources = net.RelayURL(), nil
	icfg.PLCURL = net.PLCURL()
	icfg.SkipHandleVerification = true // .test handles cannot be checked offline
	d.load = net.StartLoad(testnet.LoadOptions{Rate: 5, Accounts: d.accounts, Workers: 1})
	return d, nil
}

func (d *demoNet) printHelp(w io.Writer, base string) {
	fmt.Fprintf(w, "demo: a test network with %d accounts (alice.test, bob.test, carol.test) writing about 5 records/s; relay %s, PDS %s\n",
		len(d.accounts), d.net.RelayURL(), d.net.PDSURL())
	fmt.Fprintf(w, "demo: try  curl '%s/xrpc/com.atproto.repo.listRecords?repo=alice.test&collection=app.bsky.feed.post&limit=3'\n", base)
	fmt.Fprintf(w, "demo:      curl '%s/xrpc/dev.cistern.listCollection?collection=app.bsky.feed.post&limit=5'\n", base)
	fmt.Fprintf(w, "demo:      curl %s/stats    and the status page at %s/\n", base, base)
}

// Close stops the writers and the network and removes the temporary store.
func (d *demoNet) Close() {
	if d.load != nil {
		d.load.Stop()
	}
	_ = d.net.Close()
	if d.tmp != "" {
		_ = os.RemoveAll(d.tmp)
	}
}
