package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// hookTimeout bounds a --takeover-exec or --release-exec command: a takeover that hangs
// would keep the workspaces from every gateway.
const hookTimeout = 30 * time.Second

// runHook runs a gateway's shell command (--takeover-exec, --release-exec) with the
// listen address in OVLNFS_LISTEN and the server's pid in OVLNFS_PID; its output goes
// to the log.
func runHook(ctx context.Context, flag, command string, cfg *serveConfig, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), "OVLNFS_LISTEN="+cfg.listen, fmt.Sprintf("OVLNFS_PID=%d", os.Getpid()),
		"OVLNFS_HOOK="+strings.TrimPrefix(flag, "--"))
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %q: %v: %s", flag, command, err, strings.TrimSpace(string(out)))
	}
	logger.Info("hook ran", "hook", flag, "seconds", time.Since(t0).Seconds(), "output", strings.TrimSpace(string(out)))
	return nil
}
