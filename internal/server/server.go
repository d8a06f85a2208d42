// Package server assembles one ovlnfs server: the union of the layers (billyunion), its
// file handles (handles), the NFSv3 and MOUNT programs (nfs3, mount), the bridge to go-nfs
// that answers MNT (gonfs), and the ONC RPC layer that serves them (oncrpc): NFSv3 and
// MOUNT over TCP, MOUNT alone over UDP (NFS over UDP is not served: its replies would have
// to fit a datagram). With Config.NLM, the lock manager too (nlm, its lock table locks and
// its status monitor nsm), on sockets of its own, TCP and UDP. It also assembles the
// portmapper (portmap) that tells clients where those are. Data flows one way: oncrpc →
// nfs3/mount/nlm → handles → billyunion → layers.
//
// Files: server.go (Config, New, Serve, ServeUDP, Services, Shutdown, Close), locking.go
// (the lock manager: ServeLocks, ServeLocksUDP, LockServices, NotifyRestart),
// portmap.go (Portmapper: the portmapper's own RPC server).
//
// Lock order: this package takes no locks; see docs/architecture.md for the order across
// packages.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/internal/gonfs"
	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
)

// Config is one export's layers and the server's tunables.
type Config struct {
	Lowers      []string // top-down
	Upper, Work string   // both "" for a read-only union
	XattrPrefix string   // "" lets the union pick
	// RedirectDir is the kernel's redirect_dir option: on, follow, nofollow or off; ""
	// lets the union pick (on, or nofollow with the user.overlay. prefix).
	RedirectDir string
	// Unicode is how names compare (billyunion.Options.Unicode): exact or insensitive;
	// "" is exact.
	Unicode string
	// Index is the kernel's index option: on or off; "" for the union's
	// default, on (billyunion.Options.Index).
	Index string
	// DirCacheEntries bounds the merged listings kept (0: the union's default);
	// HandleCacheEntries the handle → path cache (0: its default).
	DirCacheEntries, HandleCacheEntries int
	// ActAsCaller makes what a client creates its user's; the process must be root.
	ActAsCaller bool
	// RequirePrivilegedPort refuses NFS calls from source ports of 1024 or more
	// (nfs3.Config.RequirePrivilegedPort).
	RequirePrivilegedPort bool
	// RefuseAppleDouble refuses new "._name" and ".DS_Store" entries
	// (nfs3.Config.RefuseAppleDouble).
	RefuseAppleDouble bool
	// NLM serves the lock manager (NLM 1, 3, 4 and NSM 1: ServeLocks, ServeLocksUDP).
	NLM bool
	// Grace is the grace period after a restart in which clients reclaim their locks;
	// it applies only when the previous run had clients that may hold locks.
	Grace time.Duration
	// LockState is the status monitor's directory; "" is Work/ovlnfs-nsm, or nothing kept
	// for a union without a workdir (a restart then tells no client).
	LockState string
	// PeerPortmapPort is where clients' portmappers are asked for their lock manager and
	// status monitor (0: 111); tests move it.
	PeerPortmapPort uint16
	Logger          *slog.Logger
}

// Server is a running export.
type Server struct {
	union  *billyunion.FS
	nfs    *nfs3.Server
	bridge *gonfs.Bridge
	rpc    *oncrpc.Server // NFSv3 and MOUNT, over TCP
	udp    *oncrpc.Server // MOUNT, over UDP
	lock   *locking       // nil without Config.NLM
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
		RedirectDir:     cfg.RedirectDir,
		Unicode:         cfg.Unicode,
		Index:           cfg.Index,
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
		ActAsCaller: cfg.ActAsCaller, RequirePrivilegedPort: cfg.RequirePrivilegedPort,
		RefuseAppleDouble: cfg.RefuseAppleDouble, Logger: logger})
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
	// Over UDP the same MOUNT program (one DUMP list), without NFS.
	udp, err := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{mnt.Program()}, Logger: logger})
	if err != nil {
		bridge.Close()
		return nil, err
	}
	s := &Server{union: union, nfs: nfs, bridge: bridge, rpc: rpc, udp: udp, logger: logger}
	if cfg.NLM {
		if s.lock, err = newLocking(cfg, hs, logger); err != nil {
			bridge.Close()
			return nil, err
		}
	}
	return s, nil
}

// Serve answers clients on l until l is closed (it then returns nil) or fails.
func (s *Server) Serve(l net.Listener) error {
	err := s.rpc.Serve(l)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ServeUDP answers MOUNT over UDP on pc until pc is closed or Shutdown stops it (it then
// returns nil). NFS calls over UDP are answered PROG_UNAVAIL.
func (s *Server) ServeUDP(pc *net.UDPConn) error {
	err := s.udp.ServeUDP(pc)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Services lists what this server answers where, for the portmapper: NFSv3 and MOUNT v3
// at the TCP listener's address, MOUNT v3 at the UDP socket's (udp nil: none).
func Services(tcp, udp net.Addr) ([]portmap.Service, error) {
	var out []portmap.Service
	add := func(prog, vers uint32, addr net.Addr) error {
		s, err := portmap.ServicesAt(prog, vers, addr)
		out = append(out, s...)
		return err
	}
	if err := add(nfs3.ProgramNumber, nfs3.Version, tcp); err != nil {
		return nil, err
	}
	if err := add(mount.ProgramNumber, mount.Version, tcp); err != nil {
		return nil, err
	}
	if udp != nil {
		if err := add(mount.ProgramNumber, mount.Version, udp); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Shutdown waits (bounded by ctx) for the calls already read to be answered, after the
// listeners were closed, and closes the connections. UDP sockets stop being read; close
// them after Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	err := errors.Join(s.rpc.Shutdown(ctx), s.udp.Shutdown(ctx))
	if s.lock != nil {
		err = errors.Join(err, s.lock.rpc.Shutdown(ctx))
	}
	return err
}

// Close stops the lock manager's calls to clients, releases the open files, go-nfs and
// the union; call it after Shutdown.
func (s *Server) Close() error {
	var err error
	if s.lock != nil {
		err = s.lock.close()
	}
	s.nfs.Close()
	s.bridge.Close()
	return errors.Join(err, s.union.Close())
}
