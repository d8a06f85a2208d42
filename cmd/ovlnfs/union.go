package main

import (
	"log/slog"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// openUnion builds the union the server exports.
func openUnion(cfg *serveConfig, logger *slog.Logger) (*billyunion.FS, error) {
	return billyunion.New(billyunion.Options{
		Lowers:          cfg.lowers,
		Upper:           cfg.upper,
		Work:            cfg.work,
		XattrPrefix:     cfg.xattrPrefix,
		DirCacheEntries: cfg.dirCacheEntries,
		Logger:          logger.With("component", "union"),
	})
}
