package testnet_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/cistern-dev/cistern/testnet"
)

func Example() {
	n, err := testnet.Start(context.Background(), testnet.Options{})
	if err != nil {
		panic(err)
	}
	defer n.Close()

	alice, _ := n.CreateAccount("alice.test", testnet.Records("app.bsky.feed.post", 3))
	rec, _ := alice.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", "hello"))
	fmt.Println(rec.Collection, len(alice.Records()))

	resp, err := http.Get(n.PDSURL() + "/xrpc/com.atproto.sync.getRepo?did=" + alice.DID().String())
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	// Output:
	// app.bsky.feed.post 4
	// 200 application/vnd.ipld.car
}

// IndexerSettings are what an indexer needs to follow the network; its
// HTTP client refuses any host outside it, such as a production default
// left in place.
func ExampleNetwork_IndexerSettings() {
	n, err := testnet.Start(context.Background(), testnet.Options{})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	s := n.IndexerSettings()
	fmt.Println(s.RelayURL == n.RelayURL(), s.PLCURL == n.PLCURL(), s.SkipHandleVerification)

	_, err = s.HTTPClient.Get("https://plc.directory/did:plc:ewvi7nxzyoun6zhxrhs64oiz")
	fmt.Println(errors.Is(err, testnet.ErrOutsideNetwork))
	// Output:
	// true true true
	// true
}
