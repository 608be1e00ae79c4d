package cistern

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/cistern-dev/cistern/resolver"
)

// With no Logger, the library writes warnings and errors to slog.Default's
// handler, and nothing below DefaultLogLevel.
func TestConfig_DefaultLoggerIsQuiet(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(prev)

	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	log := cfg.Logger.With("component", "test")
	log.Info("progress line")
	log.Debug("detail")
	log.Warn("something to act on", "n", 1)
	log.Error("a failure")
	out := buf.String()
	if strings.Contains(out, "progress line") || strings.Contains(out, "detail") {
		t.Errorf("INFO or DEBUG reached the default handler:\n%s", out)
	}
	for _, w := range []string{"something to act on", "n=1", "component=test", "a failure"} {
		if !strings.Contains(out, w) {
			t.Errorf("%q missing from the default handler's output:\n%s", w, out)
		}
	}
	if cfg.Logger.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("the default Logger is enabled at INFO")
	}

	// A Logger of the host's own is used as given.
	mine := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg, _ := (Config{Logger: mine}).withDefaults(); cfg.Logger != mine {
		t.Error("Config.Logger was replaced")
	}
}

func TestConfig_IgnoredSettings(t *testing.T) {
	custom := resolver.NewStatic()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"default resolver", Config{PLCURL: "http://plc", SkipHandleVerification: true}, ""},
		{"custom resolver alone", Config{Resolver: custom}, ""},
		{"custom resolver and PLC", Config{Resolver: custom, PLCURL: "http://plc"}, "PLCURL"},
		{"custom resolver and both", Config{Resolver: custom, PLCURL: "http://plc", SkipHandleVerification: true}, "PLCURL,SkipHandleVerification"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(tc.cfg.endpoints().Ignored(), ","); got != tc.want {
				t.Errorf("ignoredSettings = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConfig_MixedNetworks(t *testing.T) {
	local, prod := "http://127.0.0.1:2590", "wss://relay.example.com"
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // in the warning; "" for none
	}{
		{"all defaults", Config{}, ""},
		{"production relay, default PLC", Config{RelayURL: prod}, ""},
		{"local relay and PLC", Config{RelayURL: local, PLCURL: local}, ""},
		{"local relay, default PLC", Config{RelayURL: local}, "production PLC directory"},
		{"local relay, production PLC given", Config{RelayURL: local, PLCURL: "https://plc.directory"}, "production PLC directory"},
		{"local source, default PLC", Config{Sources: []string{"ws://localhost:2583"}}, "production PLC directory"},
		{"local crawl host, default PLC", Config{CrawlURL: "http://pds.test"}, "production PLC directory"},
		{"private relay, default PLC", Config{RelayURL: "ws://10.0.0.5:2470"}, "production PLC directory"},
		{"local PLC, default relay", Config{PLCURL: local}, "production relay"},
		{"local PLC, production relay given", Config{PLCURL: local, RelayURL: "wss://bsky.network"}, "production relay"},
		{"local PLC, no relay needed", Config{PLCURL: local, NoFirehose: true, NoCrawl: true}, ""},
		{"local relay, custom resolver", Config{RelayURL: local, Resolver: resolver.NewStatic()}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.cfg.endpoints().Mixed()
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Errorf("mixedNetworks = %q, want one with %q", got, tc.want)
			}
		})
	}
}

// Open says where it connects, and warns about ignored settings and mixed
// networks with the default (WARN) logger.
func TestOpen_LogsSettings(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(prev)

	ix, err := Open(Config{Path: t.TempDir() + "/c.db", RelayURL: "http://127.0.0.1:9", NoFirehose: true, NoCrawl: true})
	if err != nil {
		t.Fatal(err)
	}
	ix.Close()
	ix, err = Open(Config{Path: t.TempDir() + "/c.db", Resolver: resolver.NewStatic(), PLCURL: "http://127.0.0.1:9", SkipHandleVerification: true, NoFirehose: true, NoCrawl: true})
	if err != nil {
		t.Fatal(err)
	}
	ix.Close()
	out := buf.String()
	for _, w := range []string{"production PLC directory", "https://plc.directory", "settings ignored", "PLCURL", "SkipHandleVerification"} {
		if !strings.Contains(out, w) {
			t.Errorf("%q is not in the default log:\n%s", w, out)
		}
	}
	if strings.Contains(out, "cistern: open") {
		t.Errorf("the INFO line reached the default logger:\n%s", out)
	}

	// With a logger of its own, the host sees where the indexer connects.
	buf.Reset()
	ix, err = Open(Config{Path: t.TempDir() + "/c.db", NoCrawl: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ix.Close()
	for _, w := range []string{"cistern: open", "wss://bsky.network (default: production)", "https://plc.directory (default: production)", "crawl=(NoCrawl)"} {
		if !strings.Contains(buf.String(), w) {
			t.Errorf("%q is not in the open line:\n%s", w, buf.String())
		}
	}
}
