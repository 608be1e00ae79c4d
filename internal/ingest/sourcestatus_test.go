package ingest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cistern-dev/cistern/verify"
)

func TestRecent_RejectionsNewestFirstAndBounded(t *testing.T) {
	for _, n := range []int{0, 1, maxRejections, maxRejections + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			in := &Ingest{recent: newRecent()}
			for i := range n {
				in.recent.rejected(fmt.Sprintf("did:plc:%d", i), "rev", verify.RejectBadSignature, errors.New("bad"))
			}
			got := in.Rejections()
			if len(got) != min(n, maxRejections) {
				t.Fatalf("%d rejections, want %d", len(got), min(n, maxRejections))
			}
			for i, r := range got {
				if want := fmt.Sprintf("did:plc:%d", n-1-i); r.DID != want || r.Message != "bad" {
					t.Fatalf("rejection %d is %+v, want %s", i, r, want)
				}
			}
		})
	}
}

// BenchmarkRecentReceived is what the status report adds to each firehose
// message.
func BenchmarkRecentReceived(b *testing.B) {
	r := newRecent()
	for b.Loop() {
		r.received("wss://relay.example")
	}
}
