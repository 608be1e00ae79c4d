package ingest

import (
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
)

func TestKeyCache(t *testing.T) {
	c := newKeyCache()
	priv, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	mb := pub.Multibase()
	k1, err := c.parse(mb)
	if err != nil || k1.Multibase() != mb {
		t.Fatalf("parse: %v, %v", k1, err)
	}
	k2, _ := c.parse(mb)
	if k1 != k2 {
		t.Fatal("the second parse did not come from the cache")
	}
	if _, err := c.parse("zNotAKey"); err == nil {
		t.Fatal("a bad key parsed")
	}
	if len(c.m) != 1 {
		t.Fatalf("%d entries cached, want 1 (errors are not cached)", len(c.m))
	}
	// Full: a new key replaces an entry instead of growing the map.
	for i := len(c.m); i < keyCacheSize; i++ {
		c.m[fmt.Sprint("filler", i)] = pub
	}
	priv2, _ := atcrypto.GeneratePrivateKeyK256()
	pub2, _ := priv2.PublicKey()
	if k, err := c.parse(pub2.Multibase()); err != nil || k.Multibase() != pub2.Multibase() {
		t.Fatalf("parse when full: %v", err)
	}
	if len(c.m) > keyCacheSize {
		t.Fatalf("cache grew to %d entries, bound %d", len(c.m), keyCacheSize)
	}
}

func BenchmarkKeyParse(b *testing.B) {
	priv, _ := atcrypto.GeneratePrivateKeyK256()
	pub, _ := priv.PublicKey()
	mb := pub.Multibase()
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := atcrypto.ParsePublicMultibase(mb); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := newKeyCache()
		for b.Loop() {
			if _, err := c.parse(mb); err != nil {
				b.Fatal(err)
			}
		}
	})
}
