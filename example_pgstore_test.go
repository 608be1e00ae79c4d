package cistern_test

import (
	"context"
	"log"
	"os"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store/pgstore"
)

// An indexer on PostgreSQL instead of a bbolt file: open the store, hand
// it to Config.Store, and close it after the Indexer (which does not close
// a store it did not open). Other processes can serve the same database
// read-only.
func ExampleConfig_postgreSQL() {
	ctx := context.Background()
	// The tables go to the "cistern" schema, created on first use.
	st, err := pgstore.Open(ctx, os.Getenv("CISTERN_PG_URL"), &pgstore.Options{Schema: "cistern"})
	if err != nil {
		log.Fatal(err) // names the URL, password hidden, and the cause
	}
	defer st.Close()

	ix, err := cistern.Open(cistern.Config{
		Store: st,
		Filter: filter.Spec{
			Signals:     []string{"xyz.statusphere.status"},
			Collections: []string{"xyz.statusphere.status"},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ix.Close()
	go ix.Run(ctx)
}
