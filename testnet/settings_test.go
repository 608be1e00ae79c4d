package testnet_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/testnet"
)

func TestIndexerSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
	}{
		{"own ports", ""},
		{"one shared port", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net, err := testnet.Start(context.Background(), testnet.Options{Hosts: 2, Addr: tc.addr})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = net.Close() })
			alice := net.Account(t, "alice.test")
			s := net.IndexerSettings()
			if s.RelayURL != net.RelayURL() || s.PLCURL != net.PLCURL() || !s.SkipHandleVerification || s.HTTPClient == nil {
				t.Fatalf("settings %+v do not point at the network", s)
			}
			// The client reaches every server of the network...
			for _, u := range []string{
				net.PLCURL() + "/" + alice.DID().String(),
				net.RelayURL() + "/xrpc/com.atproto.sync.listRepos",
				net.Host(0).URL() + "/xrpc/com.atproto.sync.getRepoStatus?did=" + alice.DID().String(),
				net.Host(1).URL() + "/xrpc/com.atproto.sync.listRepos",
			} {
				resp, err := s.HTTPClient.Get(u)
				if err != nil {
					t.Fatalf("GET %s: %v", u, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s: %d", u, resp.StatusCode)
				}
			}
			// ... and nothing else: a production default fails at once,
			// naming the URL.
			for _, u := range []string{"https://plc.directory/" + alice.DID().String(), "http://127.0.0.1:1/", "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos"} {
				_, err := s.HTTPClient.Get(strings.Replace(u, "wss:", "https:", 1))
				if !errors.Is(err, testnet.ErrOutsideNetwork) {
					t.Errorf("GET %s = %v; want ErrOutsideNetwork", u, err)
				}
			}
		})
	}
}
