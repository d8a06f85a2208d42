// Package server assembles one ovlnfs server: the union of the layers (billyunion), its
// file handles (handles), the NFSv3 and MOUNT programs (nfs3, mount), the bridge to go-nfs
// that answers MNT (gonfs), and the ONC RPC layer that serves them (oncrpc). Data flows
// one way: oncrpc → nfs3/mount → handles → billyunion → layers.
//
// Files: server.go (Config, New, Serve, Shutdown, Close).
//
// Lock order: this package takes no locks; see docs/architecture.md for the order across
// packages.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/internal/gonfs"
	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// Config is one export's layers and the server's tunables.
type Config struct {
	Lowers      []string // top-down
	Upper, Work string   // both "" for a read-only union
	XattrPrefix string   // "" lets the union pick
	// DirCacheEntries bounds the merged listings kept (0: the union's default);
	// HandleCacheEntries the handle → path cache (0: its default).
	DirCacheEntries, HandleCacheEntries int
	// ActAsCaller makes what a client creates its user's; the process must be root.
	ActAsCaller bool
	Logger      *slog.Logger
}

// Server is a running export.
type Server struct {
	union  *billyunion.FS
	nfs    *nfs3.Server
	bridge *gonfs.Bridge
	rpc    *oncrpc.Server
	logger *slog.Logger
}

// New opens the union and builds everything that serves it. Its errors say what is wrong
// with the configuration in one line.
func New(cfg Config) (*Server, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	union, err := billyunion.New(billyunion.Options{
		Lowers:          cfg.Lowers,
		Upper:           cfg.Upper,
		Work:            cfg.Work,
		XattrPrefix:     cfg.XattrPrefix,
		DirCacheEntries: cfg.DirCacheEntries,
		Logger:          logger.With("component", "union"),
	})
	if err != nil {
		return nil, err
	}
	s, err := assemble(cfg, union, logger)
	if err != nil {
		_ = union.Close()
		return nil, err
	}
	return s, nil
}

func assemble(cfg Config, union *billyunion.FS, logger *slog.Logger) (*Server, error) {
	hs, err := handles.New(union, handles.Options{CacheEntries: cfg.HandleCacheEntries, Logger: logger.With("component", "handles")})
	if err != nil {
		return nil, err
	}
	statfsPath := cfg.Upper
	if union.ReadOnly() || statfsPath == "" {
		statfsPath = cfg.Lowers[0]
	}
	nfs, err := nfs3.New(nfs3.Config{Union: union, Handles: hs, StatfsPath: statfsPath,
		ActAsCaller: cfg.ActAsCaller, Logger: logger})
	if err != nil {
		return nil, err
	}
	bridge, err := gonfs.New(gonfs.Config{Union: union, Handles: hs, Logger: logger})
	if err != nil {
		return nil, err
	}
	mnt, err := mount.New(mount.Config{Mnt: bridge.Forward, Logger: logger})
	if err != nil {
		bridge.Close()
		return nil, err
	}
	rpc, err := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{nfs.Program(), mnt.Program()}, Logger: logger})
	if err != nil {
		bridge.Close()
		return nil, err
	}
	return &Server{union: union, nfs: nfs, bridge: bridge, rpc: rpc, logger: logger}, nil
}

// Serve answers clients on l until l is closed (it then returns nil) or fails.
func (s *Server) Serve(l net.Listener) error {
	err := s.rpc.Serve(l)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown waits (bounded by ctx) for the calls already read to be answered, after the
// listeners were closed, and closes the connections.
func (s *Server) Shutdown(ctx context.Context) error { return s.rpc.Shutdown(ctx) }

// Close releases the open files, go-nfs and the union; call it after Shutdown.
func (s *Server) Close() error {
	s.nfs.Close()
	s.bridge.Close()
	return s.union.Close()
}
