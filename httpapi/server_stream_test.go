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
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
)

// The Server mounts StreamHandler at /stream over the Indexer, counts its
// subscribers, and answers bad stream parameters with 400 before upgrading.
func TestServer_Stream(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 3))
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{alice.DID().String()}})
	waitSynced(t, ix, alice.DID().String())
	api := serve(t, ix, httpapi.Options{}).URL

	if a := get(t, api+"/stream?cursor=abc"); a.Status != http.StatusBadRequest || a.errName() != "InvalidRequest" {
		t.Fatalf("bad cursor: %d %s", a.Status, a.Body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(api, "http")+"/stream?cursor=0&collections="+posts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()

	waitFor(t, "one subscription in /stats", func() bool {
		var st struct{ Subscriptions int64 }
		get(t, api+"/stats").decode(t, &st)
		return st.Subscriptions == 1 // the /stream connection; no library subscription yet
	})
	if !strings.Contains(string(get(t, api+"/metrics").Body), "cistern_stream_subscribers 1") {
		t.Fatal("metrics do not count the subscriber")
	}
	// All subscriptions, the library's too, are counted apart.
	lib, err := ix.Subscribe(ctx, stream.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m := string(get(t, api+"/metrics").Body); !strings.Contains(m, "cistern_stream_subscriptions 2") {
		t.Fatal("metrics do not count the library's subscription with the WebSocket's")
	}
	lib.Close()
	waitFor(t, "the library's subscription to end", func() bool {
		st, err := ix.Stats(ctx)
		return err == nil && st.Subscriptions == 1
	})

	rec, err := alice.CreateRecord(posts, testnet.Post(posts, "live one"))
	if err != nil {
		t.Fatal(err)
	}
	type frame struct {
		ID     uint64
		Type   string
		Record struct {
			Live       bool
			DID        string
			Collection string
			RKey       string
			Action     string
		}
	}
	var got []frame
	for len(got) < 4 {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d frames: %v", len(got), err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		got = append(got, f)
	}
	for i, f := range got {
		if f.Type != "record" || f.Record.DID != alice.DID().String() || f.Record.Collection != posts || f.Record.Action != "create" {
			t.Fatalf("frame %d: %+v", i, f)
		}
		if i > 0 && f.ID <= got[i-1].ID {
			t.Fatalf("ids out of order: %d after %d", f.ID, got[i-1].ID)
		}
	}
	if last := got[3]; !last.Record.Live || last.Record.RKey != rec.RKey {
		t.Fatalf("live frame %+v, want rkey %s", last, rec.RKey)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the subscriber to go", func() bool {
		var st struct{ Subscribers int64 }
		get(t, api+"/stats").decode(t, &st)
		return st.Subscribers == 0
	})
}
