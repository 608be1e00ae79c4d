// Package loglevel drops the log records below a level before they reach a
// handler: the root package's default Logger (slog.Default's handler, from
// DefaultLogLevel up) is built with it, so that a library does not fill its
// host's log with progress lines.
package loglevel

import (
	"context"
	"log/slog"
)

// Min returns a handler passing h the records at or above min.
func Min(min slog.Level, h slog.Handler) slog.Handler { return minLevel{min: min, h: h} }

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
