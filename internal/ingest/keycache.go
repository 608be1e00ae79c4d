package ingest

import (
	"sync"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
)

// keyCacheSize bounds the parsed signing keys kept: about 200 bytes each.
const keyCacheSize = 1 << 16

// keyCache keeps parsed signing keys by their multibase form. Parsing a
// compressed K-256 key decompresses a point (a modular square root): ~20 µs
// here, a sixth of a signature check, which was paid for every live commit
// (BenchmarkKeyParse). When full, an arbitrary entry is dropped for each new one.
type keyCache struct {
	mu sync.Mutex
	m  map[string]atcrypto.PublicKey
}

func newKeyCache() *keyCache { return &keyCache{m: make(map[string]atcrypto.PublicKey)} }

// parse returns the key named by multibase, parsed once.
func (c *keyCache) parse(multibase string) (atcrypto.PublicKey, error) {
	c.mu.Lock()
	k, ok := c.m[multibase]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := atcrypto.ParsePublicMultibase(multibase)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= keyCacheSize {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[multibase] = k
	return k, nil
}
