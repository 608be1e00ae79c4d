package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// The Server mounts Jetstream's /subscribe over the Indexer: backfilled
// records come as commits, bad parameters get 400 before the upgrade, and
// /metrics counts the connections.
func TestServer_JetstreamSubscribe(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 3))
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{alice.DID().String()}})
	waitSynced(t, ix, alice.DID().String())
	api := serve(t, ix, httpapi.Options{}).URL

	if a := get(t, api+"/subscribe?wantedCollections=no"); a.Status != http.StatusBadRequest ||
		a.errName() != "InvalidRequest" || !strings.HasPrefix(a.errMessage(), "wantedCollections:") {
		t.Fatalf("bad collection: %d %s", a.Status, a.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(api, "http")+"/subscribe?cursor=0&wantedCollections="+posts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	commits := 0
	for commits < 3 {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("after %d commits: %v", commits, err)
		}
		var ev struct {
			DID    string `json:"did"`
			Kind   string `json:"kind"`
			Commit struct {
				Operation, Collection string
			} `json:"commit"`
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.DID != alice.DID().String() {
			t.Fatalf("event of another repo: %s", b)
		}
		if ev.Kind == "commit" {
			if ev.Commit.Operation != "create" || ev.Commit.Collection != posts {
				t.Fatalf("unexpected commit %s", b)
			}
			commits++
		}
	}
	if m := string(get(t, api+"/metrics").Body); !strings.Contains(m, "cistern_jetstream_subscribers 1") {
		t.Fatal("metrics do not count the Jetstream connection")
	}
}
