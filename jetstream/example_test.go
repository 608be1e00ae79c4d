package jetstream_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cistern-dev/cistern/jetstream"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

// An embedded app mounts Jetstream's endpoint on its own mux. With an
// Indexer ix, the handler is jetstream.New(ix, ix.Store(), opts); here a
// bare store and log stand in for it.
func Example() {
	dir, _ := os.MkdirTemp("", "jetstream-example")
	defer os.RemoveAll(dir)
	st, err := boltstore.Open(filepath.Join(dir, "cistern.db"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	log := stream.New(st, stream.Options{})
	defer log.Close()

	mux := http.NewServeMux()
	mux.Handle("GET /subscribe", jetstream.New(log, st, jetstream.Options{WriteTimeout: 5 * time.Second}))
	// http.ListenAndServe("127.0.0.1:6008", mux)
	fmt.Println("mounted")
	// Output: mounted
}

// The filter and the rendering serve Go code too: select events as a
// Jetstream subscriber would and render them in Jetstream's JSON.
func ExampleAppendEvent() {
	f, err := jetstream.NewFilter([]string{"app.bsky.feed.*"}, nil, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := &store.Event{ID: 7, Kind: store.KindAccount, DID: "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
		Time: time.Date(2026, 12, 2, 15, 4, 5, 123456000, time.UTC), Status: "deactivated"}
	if f.Match(ev) { // account events pass a collection filter
		b, err := jetstream.AppendEvent(nil, ev)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(string(b))
	}
	// Output: {"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","time_us":1796223845123456,"kind":"account","account":{"active":false,"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","seq":7,"status":"deactivated","time":"2026-12-02T15:04:05.123Z"}}
}

// Jetstream's compressed frames decode with its dictionary.
func ExampleDictionary() {
	fmt.Println(len(jetstream.Dictionary()) > 0)
	// Output: true
}
