package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/control"
	"github.com/ovlnfs/ovlnfs/internal/metrics"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/procs"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// shutdownTimeout bounds how long a stopping server waits for calls in flight.
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
// workdir and its lock file, which are made only once everything else checked out, and an
// explicit --portmap that cannot be had, which shows only once the union is open and the
// sockets serve.
func serve(ctx context.Context, cfg *serveConfig, stderr io.Writer) int {
	logger := newLogger(cfg, stderr)
	refused := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "ovlnfs: "+format+"\n", args...)
		return exitBadConfig
	}

	defer sizeScheduler(ctx, cfg.gomaxprocs, logger)()
	if cfg.pprofListen != "" {
		pl, err := net.Listen("tcp", cfg.pprofListen)
		if err != nil {
			return refused("cannot listen on %s for profiles: %v", cfg.pprofListen, unwrapOpError(err))
		}
		defer servePprof(pl, logger)()
	}
	var m *metrics.Metrics
	metricsAddr := ""
	if cfg.metricsListen != "" {
		ml, err := net.Listen("tcp", cfg.metricsListen)
		if err != nil {
			return refused("cannot listen on %s for metrics: %v", cfg.metricsListen, unwrapOpError(err))
		}
		m, metricsAddr = metrics.New(), ml.Addr().String()
		defer serveMetrics(ml, m.Handler(), logger)()
	}

	exports := cfg.exports
	if cfg.configFile == "" {
		exports = []server.Export{{Path: "/", Lowers: cfg.lowers, Upper: cfg.upper, Work: cfg.work,
			CreateWork: cfg.workIsAuto, XattrPrefix: cfg.xattrPrefix, RedirectDir: cfg.redirectDir,
			Unicode: cfg.unicode, Index: cfg.index, RefuseAppleDouble: cfg.refuseAppleDouble,
			QuotaBytes: cfg.quotaBytes, QuotaInodes: cfg.quotaInodes,
			Clients: clients.Everyone(cfg.requirePrivilegedPort)}}
	}
	scfg := server.Config{
		Exports:            exports,
		DirCacheEntries:    cfg.dirCacheEntries,
		HandleCacheEntries: cfg.handleCacheEntries,
		// Only root can give what a client creates to the client's user.
		ActAsCaller: os.Geteuid() == 0,
		NLM:         cfg.nlm,
		Grace:       cfg.grace,
		LockState:   cfg.lockState,
		Metrics:     m,
		Logger:      logger,
	}

	var (
		listener net.Listener
		mountUDP *net.UDPConn
		nlmTCP   net.Listener
		nlmUDP   *net.UDPConn
	)
	defer func() {
		if listener != nil {
			listener.Close()
		}
		if mountUDP != nil {
			mountUDP.Close()
		}
		if nlmTCP != nil {
			nlmTCP.Close()
		}
		if nlmUDP != nil {
			nlmUDP.Close()
		}
	}()
	// listen makes the sockets clients use: NFS and MOUNT at --listen, the lock manager's.
	listen := func() error {
		var err error
		if listener, mountUDP, err = listenPair(cfg.listen, "--listen", cfg.udp); err != nil {
			return err
		}
		if cfg.nlm {
			if nlmTCP, nlmUDP, err = listenPair(cfg.nlmListen, "--nlm-listen", true); err != nil {
				return err
			}
		}
		return nil
	}
	var srv *server.Server
	var err error
	if cfg.standby {
		// A standby takes the workdirs first and listens only then: the --listen address
		// is typically the floating one, which comes here with the takeover.
		notify := func(state string) { _ = sdNotify(state) }
		notify("STATUS=standby: waiting for the workdir locks")
		srv, err = server.NewStandby(ctx, scfg, func(workdir, holder string) {
			logger.Info("standby: waiting for the workdir lock", "workdir", workdir, "holder_pid", holder)
		})
		if err != nil {
			if ctx.Err() != nil {
				logger.Info("ovlnfs stopped while on standby", "reason", "signal")
				return exitOK
			}
			return refused("%v", err)
		}
		logger.Info("standby: took the workdirs over", "exports", exportPaths(exports))
		if cfg.takeoverExec != "" {
			if err := runHook(ctx, "--takeover-exec", cfg.takeoverExec, cfg, logger); err != nil {
				_ = srv.Close()
				return refused("%v", err)
			}
		}
		if err := listen(); err != nil {
			_ = srv.Close()
			return refused("%v", err)
		}
	} else {
		if err := listen(); err != nil {
			return refused("%v", err)
		}
		if srv, err = server.New(scfg); err != nil {
			return refused("%v", err)
		}
	}
	defer func() {
		if cfg.releaseExec != "" {
			// Before the workdirs are let go: the address leaves this machine before the
			// next gateway can take the workspaces over and bring it up elsewhere.
			if err := runHook(context.Background(), "--release-exec", cfg.releaseExec, cfg, logger); err != nil {
				logger.Error("release hook failed", "err", err)
			}
		}
		if err := srv.Close(); err != nil {
			logger.Error("closing the exports", "err", err)
		}
	}()

	if cfg.controlSocket != "" {
		cl, err := control.Listen(cfg.controlSocket)
		if err != nil {
			return refused("--control: %v", err)
		}
		go func() {
			if err := control.Serve(cl, srv, logger.With("component", "control")); err != nil {
				logger.Error("control socket failed", "err", err)
			}
		}()
		defer func() {
			cl.Close()
			_ = os.Remove(cfg.controlSocket)
		}()
	}

	var udpAddr net.Addr
	if mountUDP != nil {
		udpAddr = mountUDP.LocalAddr()
	}
	services, err := server.Services(listener.Addr(), udpAddr)
	if err != nil {
		return refused("%v", err)
	}
	var lockServices []portmap.Service
	if cfg.nlm {
		if lockServices, err = server.LockServices(nlmTCP.Addr(), nlmUDP.LocalAddr()); err != nil {
			return refused("%v", err)
		}
	}

	// Every Serve reports here if it stops on its own; it returns nil when stopped below.
	failed := make(chan error, 4)
	var serving sync.WaitGroup
	serving.Go(func() {
		if err := srv.Serve(listener); err != nil {
			failed <- fmt.Errorf("NFS over TCP: %w", err)
		}
	})
	if mountUDP != nil {
		serving.Go(func() {
			if err := srv.ServeUDP(mountUDP); err != nil {
				failed <- fmt.Errorf("MOUNT over UDP: %w", err)
			}
		})
	}
	if cfg.nlm {
		serving.Go(func() {
			if err := srv.ServeLocks(nlmTCP); err != nil {
				failed <- fmt.Errorf("the lock manager over TCP: %w", err)
			}
		})
		serving.Go(func() {
			if err := srv.ServeLocksUDP(nlmUDP); err != nil {
				failed <- fmt.Errorf("the lock manager over UDP: %w", err)
			}
		})
	}
	pm, err := startPortmap(ctx, cfg, listener.Addr(), services, lockServices, logger, failed)
	if err != nil {
		listener.Close()
		if nlmTCP != nil {
			nlmTCP.Close()
		}
		_ = srv.Shutdown(context.Background())
		serving.Wait()
		return refused("%v", err)
	}
	udpListen := "off"
	if mountUDP != nil {
		udpListen = mountUDP.LocalAddr().String()
	}
	nlmListen, grace := "off", "none"
	if cfg.nlm {
		nlmListen = nlmTCP.Addr().String()
		if d, clients := srv.Grace(); d > 0 {
			grace = fmt.Sprintf("%v (%d clients of the previous run to reclaim)", d, clients)
		}
		// The previous run's clients are told once the lock manager answers.
		srv.NotifyRestart()
	}
	started := []any{"listen", listener.Addr().String(), "mount_udp", udpListen, "nlm", nlmListen,
		"grace", grace, "portmap", pm.summary}
	if cfg.controlSocket != "" {
		started = append(started, "control", cfg.controlSocket)
	}
	if cfg.metricsListen != "" {
		started = append(started, "metrics", metricsAddr)
	}
	if cfg.configFile != "" {
		started = append(started, "config", cfg.configFile, "exports", exportPaths(exports))
	} else {
		started = append(started, "lowerdir", strings.Join(cfg.lowers, ":"), "upperdir", cfg.upper,
			"workdir", cfg.work, "read_only", cfg.upper == "")
	}
	// SIGHUP is taken before the start is announced, so that one sent on seeing it reloads
	// instead of ending the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	logger.Info("ovlnfs started", append(started, "pid", os.Getpid())...)
	notify := func(state string) {
		if err := sdNotify(state); err != nil {
			logger.Warn("cannot tell systemd", "state", state, "err", err)
		}
	}
	notify("READY=1\nMAINPID=" + strconv.Itoa(os.Getpid()))
	status := exitOK
wait:
	for {
		select {
		case <-ctx.Done():
			logger.Info("ovlnfs stopping", "reason", "signal")
			break wait
		case err := <-failed:
			logger.Error("listener failed", "err", err)
			status = exitFailure
			break wait
		case <-hup:
			notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10))
			reload(cfg, srv, logger)
			notify("READY=1")
		}
	}
	notify("STOPPING=1")
	drainCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Clients stop being sent here first, then no new connection is accepted, then the
	// calls already read finish.
	pm.stop(drainCtx, logger)
	listener.Close()
	if nlmTCP != nil {
		nlmTCP.Close()
	}
	if err := srv.Shutdown(drainCtx); err != nil {
		logger.Error("shutdown incomplete", "err", err)
		status = exitFailure
	}
	if mountUDP != nil {
		mountUDP.Close()
	}
	if nlmUDP != nil {
		nlmUDP.Close()
	}
	serving.Wait()
	logger.Info("ovlnfs stopped", "exit_status", status)
	return status
}

// reload re-reads the exports file (SIGHUP) and has the server serve what it declares
// now. A file that does not check out changes nothing: the server keeps what it serves.
func reload(cfg *serveConfig, srv *server.Server, logger *slog.Logger) {
	if cfg.configFile == "" {
		logger.Info("SIGHUP ignored: there is no exports file to re-read (--config)")
		return
	}
	loaded, err := loadExportsFile(cfg.configFile)
	if err != nil {
		logger.Error("reload refused: the server keeps its exports", "config", cfg.configFile, "err", err)
		return
	}
	if loaded.state != cfg.lockState {
		logger.Warn("reload: the state directory changes only with a restart", "state", cfg.lockState, "file_says", loaded.state)
	}
	if err := srv.Reconfigure(loaded.exports); err != nil {
		logger.Error("reload incomplete", "config", cfg.configFile, "err", err)
		return
	}
	logger.Info("configuration reloaded", "config", cfg.configFile, "exports", exportPaths(loaded.exports))
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

// exportPaths lists exports for a log line.
func exportPaths(es []server.Export) string {
	paths := make([]string, len(es))
	for i := range es {
		paths[i] = describe(&es[i])
	}
	return strings.Join(paths, " ")
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

// sizeScheduler sets GOMAXPROCS for the server's run: fixed (--gomaxprocs=N), left alone
// when the GOMAXPROCS environment variable chose it, or adapted to the load (internal/procs).
// The function it returns stops the adapting and restores the value.
func sizeScheduler(ctx context.Context, fixed int, logger *slog.Logger) (stop func()) {
	if os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	if fixed > 0 {
		prev := runtime.GOMAXPROCS(fixed)
		return func() { runtime.GOMAXPROCS(prev) }
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c := procs.New(procs.Config{Logger: logger.With("component", "procs")})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
