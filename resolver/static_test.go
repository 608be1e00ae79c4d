package resolver_test

import (
	"testing"

	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/resolver/resolvertest"
)

func TestStaticConformance(t *testing.T) {
	resolvertest.Run(t, func(t *testing.T) resolvertest.Harness {
		s := resolver.NewStatic()
		return resolvertest.Harness{Resolver: s, Put: s.Put, Remove: s.Remove}
	})
}
