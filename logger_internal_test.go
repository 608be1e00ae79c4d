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
			if got := strings.Join(tc.cfg.ignoredSettings(), ","); got != tc.want {
				t.Errorf("ignoredSettings = %q, want %q", got, tc.want)
			}
		})
	}
}
