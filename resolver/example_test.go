package resolver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
)

func ExampleNewCached() {
	r := resolver.NewCached(resolver.Options{
		PLCURL:      "https://plc.directory",
		HTTPClient:  &http.Client{Timeout: 5 * time.Second},
		Capacity:    50_000,
		TTL:         30 * time.Minute,
		NegativeTTL: time.Minute,
		Logger:      slog.Default(),
	})
	ctx := context.Background()
	did := syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")

	ident, err := r.Resolve(ctx, did)
	if err != nil {
		fmt.Println("resolve:", err)
		return
	}
	fmt.Println(ident.Handle, ident.PDS)

	// On a firehose #identity event for did: forget it, so that the next
	// Resolve fetches the new document.
	_ = r.Purge(ctx, did)
}

func ExampleStatic() {
	priv, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		panic(err)
	}
	pub, err := priv.PublicKey()
	if err != nil {
		panic(err)
	}
	r := resolver.NewStatic()
	r.Put(&resolver.Identity{
		DID:        "did:plc:alice000000000000000000000",
		Handle:     "alice.test",
		PDS:        "http://127.0.0.1:2583",
		SigningKey: pub,
	})
	ctx := context.Background()
	did, _ := r.ResolveHandle(ctx, "alice.test")
	ident, _ := r.Resolve(ctx, did)
	fmt.Println(ident.DID, ident.PDS)
	// Output: did:plc:alice000000000000000000000 http://127.0.0.1:2583
}

// A Cached resolver answers from the DID document alone, and checks the
// handle on the side: what needs only the PDS and the signing key (fetching
// and verifying a repo) does not wait for the handle's DNS and HTTPS.
func ExampleCached_ResolveDocument() {
	r := resolver.NewCached(resolver.Options{HandleTimeout: 5 * time.Second})
	ctx := context.Background()
	did := syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")

	ident, err := r.ResolveDocument(ctx, did)
	if err != nil {
		fmt.Println("resolve:", err)
		return
	}
	fmt.Println("fetch the repo from", ident.PDS)
	if ident.Handle == "" {
		// Not checked yet: check it beside the fetch (the indexer does it
		// with its own pool of workers). The verdict is cached, and later
		// ResolveDocument answers carry it.
		h, err := r.CheckHandle(ctx, did)
		if err != nil {
			fmt.Println("check:", err)
			return
		}
		fmt.Println("handle:", h) // or handle.invalid
	}
}
