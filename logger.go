package cistern

import (
	"context"
	"log/slog"
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
