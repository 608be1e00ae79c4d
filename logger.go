package cistern

import (
	"context"
	"log/slog"
	"strings"
)

// DefaultLogLevel is the level below which the Indexer does not log when
// Config.Logger is nil: a library should not fill its host's log with
// progress lines. Warnings and errors still go to slog.Default's handler.
const DefaultLogLevel = slog.LevelWarn

// defaultLogger is the Logger of a Config that sets none: slog.Default's
// handler, from DefaultLogLevel up.
func defaultLogger() *slog.Logger {
	return slog.New(minLevel{min: DefaultLogLevel, h: slog.Default().Handler()})
}

// minLevel passes records at or above min to h.
type minLevel struct {
	min slog.Level
	h   slog.Handler
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}

func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }

func (m minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{min: m.min, h: m.h.WithAttrs(attrs)}
}

func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{min: m.min, h: m.h.WithGroup(name)}
}

// logSettings says at Open where the Indexer will connect, and warns about
// settings that do nothing or that mix a local network with production
// defaults.
func (ix *Indexer) logSettings(ignored []string, mixed string, plcDefault bool) {
	cfg := ix.cfg
	plc := cfg.PLCURL
	switch {
	case cfg.Resolver != nil:
		plc = "(Config.Resolver)"
	case plcDefault:
		plc += " (default: production)"
	}
	sources := "(NoFirehose)"
	if !cfg.NoFirehose {
		sources = strings.Join(cfg.Sources, ",")
		if cfg.RelayURL == defaultRelayURL && len(cfg.Sources) == 1 && cfg.Sources[0] == defaultRelayURL {
			sources += " (default: production)"
		}
	}
	crawl := cfg.CrawlURL
	if cfg.NoCrawl {
		crawl = "(NoCrawl)"
	}
	path := cfg.Path
	if cfg.Store != nil {
		path = "(Config.Store)"
	}
	ix.log.Info("cistern: open", "path", path, "firehose", sources, "crawl", crawl, "plc", plc, "verify", cfg.Verify)
	if len(ignored) > 0 {
		ix.log.Warn("cistern: settings ignored: Config.Resolver replaces the default resolver that would use them", "settings", ignored)
	}
	if mixed != "" {
		ix.log.Warn("cistern: " + mixed)
	}
}
