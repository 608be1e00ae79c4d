package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cistern-dev/cistern"
)

// schedulerFlags tune the backfill scheduler and the handle checks.
type schedulerFlags struct {
	PerHost      int
	HostInterval time.Duration
	ByteBudget   int64
	HandleChecks int
}

// Defaults of the scheduler flags. The per-host limit is the one that
// differs from the library's: one self-hosted PDS (or a test network) is
// one host, and the library's default of 4 would leave most of
// -backfill-concurrency idle there; on the real network repos are spread
// over thousands of hosts and the global concurrency binds first, while a
// host that answers 429 is paused whatever this says.
const (
	defaultPerHost      = 16
	defaultByteBudget   = 512 << 20
	defaultHandleChecks = 32
)

func (s *schedulerFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&s.PerHost, "backfill-per-host", defaultPerHost, "getRepo requests to one PDS host at once")
	fs.DurationVar(&s.HostInterval, "backfill-host-interval", 0, "minimum spacing of requests to one host (e.g. 100ms); 0: none")
	s.ByteBudget = defaultByteBudget
	fs.Var(byteSize{&s.ByteBudget}, "backfill-byte-budget", "memory for repos being backfilled (bytes, or with KiB, MiB, GiB)")
	fs.IntVar(&s.HandleChecks, "handle-checks", defaultHandleChecks, "handles checked at once (DNS, then HTTPS to the handle's domain), beside backfill")
}

func (s *schedulerFlags) validate() error {
	switch {
	case s.PerHost < 1:
		return fmt.Errorf("-backfill-per-host must be at least 1")
	case s.HostInterval < 0:
		return fmt.Errorf("-backfill-host-interval must not be negative")
	case s.ByteBudget < 1<<20:
		return fmt.Errorf("-backfill-byte-budget must be at least 1MiB")
	case s.HandleChecks < 1:
		return fmt.Errorf("-handle-checks must be at least 1")
	}
	return nil
}

// apply sets what the flags say on an indexer config.
func (s *schedulerFlags) apply(c *cistern.Config) {
	c.Backfill.PerHost = s.PerHost
	c.Backfill.HostInterval = s.HostInterval
	c.Backfill.ByteBudget = s.ByteBudget
	c.HandleCheckConcurrency = s.HandleChecks
}

// byteSize is a flag of bytes: a number, optionally followed by KiB, MiB or
// GiB (or KB, MB, GB, K, M, G, meaning the same powers of 1024).
type byteSize struct{ n *int64 }

func (b byteSize) String() string {
	if b.n == nil {
		return ""
	}
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if *b.n > 0 && *b.n%(1<<u.shift) == 0 {
			return strconv.FormatInt(*b.n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(*b.n, 10)
}

func (b byteSize) Set(s string) error {
	num, shift := strings.TrimSpace(s), uint(0)
	for _, u := range []struct {
		suffixes []string
		shift    uint
	}{{[]string{"GiB", "GB", "G"}, 30}, {[]string{"MiB", "MB", "M"}, 20}, {[]string{"KiB", "KB", "K"}, 10}} {
		for _, suf := range u.suffixes {
			if rest, ok := strings.CutSuffix(num, suf); ok {
				num, shift = strings.TrimSpace(rest), u.shift
				break
			}
		}
		if shift != 0 {
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)>>shift {
		return fmt.Errorf("invalid size %q (want bytes, or a number with KiB, MiB or GiB)", s)
	}
	*b.n = v << shift
	return nil
}
