package cistern

import (
	"log/slog"

	"github.com/cistern-dev/cistern/internal/endpoints"
	"github.com/cistern-dev/cistern/internal/loglevel"
)

// DefaultLogLevel is the level below which the Indexer does not log when
// Config.Logger is nil: a library should not fill its host's log with
// progress lines. Warnings and errors still go to slog.Default's handler.
const DefaultLogLevel = slog.LevelWarn

// defaultLogger is the Logger of a Config that sets none: slog.Default's
// handler, from DefaultLogLevel up.
func defaultLogger() *slog.Logger {
	return slog.New(loglevel.Min(DefaultLogLevel, slog.Default().Handler()))
}

// endpoints returns the settings of c that say where the Indexer connects,
// for Open's log line and warnings (internal/endpoints).
func (c Config) endpoints() endpoints.Settings {
	s := endpoints.Settings{RelayURL: c.RelayURL, CrawlURL: c.CrawlURL, PLCURL: c.PLCURL, Sources: c.Sources,
		NoFirehose: c.NoFirehose, NoCrawl: c.NoCrawl, Resolver: c.Resolver != nil,
		SkipHandleVerification: c.SkipHandleVerification, Verify: string(c.Verify)}
	if c.Store == nil {
		s.Path = c.Path
	}
	return s
}
