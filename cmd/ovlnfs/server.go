package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	nfs "github.com/willscott/go-nfs"
)

// shutdownTimeout bounds how long a stopping server waits for requests in flight.
const shutdownTimeout = 30 * time.Second

func newLogger(cfg *serveConfig, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// serve runs the server until ctx ends (SIGINT/SIGTERM) and returns the exit status.
// Every refusal happens before the first thing is created on disk, except the default
// workdir and its lock file, which are made only once everything else checked out.
func serve(ctx context.Context, cfg *serveConfig, stderr io.Writer) int {
	logger := newLogger(cfg, stderr)
	refused := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "ovlnfs: "+format+"\n", args...)
		return exitBadConfig
	}

	listener, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return refused("cannot listen on %s: address already in use", cfg.listen)
		}
		return refused("cannot listen on %s: %v", cfg.listen, unwrapOpError(err))
	}
	// Until the server runs, every exit path must close what was opened so far.
	cleanups := []func(){func() { listener.Close() }}
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}

	readOnly := cfg.upper == ""
	if !readOnly {
		if cfg.workIsAuto {
			if err := os.Mkdir(cfg.work, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				cleanup()
				return refused("cannot create workdir %s: %v", cfg.work, unwrapOpError(err))
			}
		}
		lock, err := lockWorkdir(cfg.work)
		if err != nil {
			cleanup()
			if errors.Is(err, errWorkdirBusy) {
				return refused("workdir %s is in use (%v): each running ovlnfs needs its own workdir", cfg.work, err)
			}
			return refused("cannot lock workdir %s: %v", cfg.work, unwrapOpError(err))
		}
		cleanups = append(cleanups, func() { _ = lock.release() })
	}

	union, err := openUnion(cfg, logger)
	if err != nil {
		cleanup()
		return refused("%v", err)
	}
	cleanups = append(cleanups, func() {
		if err := union.Close(); err != nil {
			logger.Error("closing union", "err", err)
		}
	})

	errnos := newErrnoRecorder()
	served := newErrnoFS(union, readOnly, errnos)
	statfsPath := cfg.upper
	if readOnly {
		statfsPath = cfg.lowers[0]
	}
	handler, hs, err := newNFSHandler(union, served, statfsPath, readOnly, cfg.handleCacheEntries, logger)
	if err != nil {
		cleanup()
		return refused("%v", err)
	}
	fsid := uint64(union.LayerSetID())
	if fsid == 0 {
		fsid = 1 // never 0: the one value that says nothing about the export
	}
	front := newFrontEnd(logger, handler, errnos, served, union, fsid)
	front.files = served.files
	front.readOnly = union.ReadOnly()
	front.dirs, front.entryHandles = union, hs
	if os.Geteuid() == 0 {
		front.asCaller = func(c caller) unionOps { return union.As(c.uid, c.gid) }
	}
	// go-nfs keeps its logger in a package variable; this is the only way to route its
	// lines into ours. It is set once, before the first connection.
	nfs.SetLogger(newGoNFSLogger(logger))

	server := &nfs.Server{Handler: handler, Context: context.WithoutCancel(ctx)}
	goNFSListener, acceptErr := front.listen(listener)
	// Serve returns when the front end closes goNFSListener at the end of shutdown.
	go func() { _ = server.Serve(goNFSListener) }()

	logger.Info("ovlnfs started",
		"listen", listener.Addr().String(),
		"lowerdir", strings.Join(cfg.lowers, ":"),
		"upperdir", cfg.upper,
		"workdir", cfg.work,
		"read_only", readOnly,
		"pid", os.Getpid())

	status := exitOK
	select {
	case <-ctx.Done():
		logger.Info("ovlnfs stopping", "reason", "signal")
	case err := <-acceptErr:
		logger.Error("listener failed", "err", err)
		status = exitFailure
	}

	// Stop accepting first, then let requests already read finish.
	listener.Close()
	drainCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	if err := front.shutdown(drainCtx); err != nil {
		logger.Error("shutdown incomplete", "err", err)
		status = exitFailure
	}
	cancel()
	served.files.closeAll()
	cleanup()
	logger.Info("ovlnfs stopped", "exit_status", status)
	return status
}

// unwrapOpError drops the "op path:" prefix Go adds, when the message already names the
// path.
func unwrapOpError(err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err
	}
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}
