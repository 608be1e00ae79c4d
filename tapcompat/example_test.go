package tapcompat_test

import (
	"context"
	"log"
	"net/http"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/tapcompat"
)

// A cistern server that tap's clients can use: /channel with acks, tap's
// endpoints, and the admin password as Basic auth.
func Example() {
	ctx := context.Background()
	ix, err := cistern.Open(cistern.Config{Path: "cistern.db"})
	if err != nil {
		log.Fatal(err)
	}
	defer ix.Close()
	tap, err := tapcompat.New(ix, tapcompat.Options{
		AdminPassword: "hunter2",                      // sent to a webhook; set WebhookURL to use one
		Sources:       []string{"wss://bsky.network"}, // for /stats/cursors
	})
	if err != nil {
		log.Fatal(err)
	}
	go ix.Run(ctx)
	go tap.Run(ctx) // delivery; stop it (cancel ctx) before closing ix
	api := httpapi.New(ix, httpapi.Options{AdminPassword: "hunter2", Tap: tap})
	log.Fatal(http.ListenAndServe("127.0.0.1:2480", api))
}
