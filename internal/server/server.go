// Package server assembles one ovlnfs server: its exports, each a union of layers
// (billyunion) with its file handles (handles) and NFSv3 server (nfs3); the MOUNT program
// (mount) and the bridge to go-nfs that answers MNT (gonfs); and the ONC RPC layer that
// serves them (oncrpc): NFSv3 and MOUNT over TCP, MOUNT alone over UDP (NFS over UDP is
// not served: its replies would have to fit a datagram). An NFS call goes to the export
// its file handle names; who may use an export is its client rules (clients). The
// exports change while serving (Reconfigure). With Config.NLM, the lock manager too (nlm,
// its lock table locks and its status monitor nsm), on sockets of its own, TCP and UDP.
// It also assembles the portmapper (portmap) that tells clients where those are. Data
// flows one way: oncrpc → nfs3/mount/nlm → handles → billyunion → layers.
//
// Files: server.go (Config, Export, New, NewStandby, Serve, ServeUDP, Services, Shutdown, Close),
// exports.go (the export set: opening and retiring exports, routing a call to its export,
// MNT's and EXPORT's view of them, Reconfigure), workspace.go (Snapshot, Reset, Commit:
// an export (or two, for a commit into another's stack) frozen around a reset or commit
// of its workspace, its changes alone stopped for a snapshot; the snapshots listed and
// removed without either), workdir.go (the lock that keeps a workdir to one process, and a standby's wait for it), locking.go (the lock manager: ServeLocks, ServeLocksUDP,
// LockServices, NotifyRestart), portmap.go (Portmapper: the portmapper's own RPC server).
//
// Lock order: Server.reconfigure, then an export's changes (taken shared by the calls
// that can change its layers, exclusively by a snapshot and by a freeze), then its
// inflight (taken shared by every call using the export, exclusively to retire or
// freeze it). Nothing takes reconfigure while holding either; a call holds the locks of
// one export at a time. Only a commit into another export's stack
// freezes two exports (frozenExports: the giver's inflight, then the target's), and it
// holds reconfigure throughout, so no two such freezes run at once.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/gonfs"
	"github.com/ovlnfs/ovlnfs/internal/metrics"
	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
)

// Export is one export: the path clients mount, its layers and who may use it.
type Export struct {
	// Path is what clients mount ("/" for the one export of the command-line flags);
	// MNT accepts directories below it too.
	Path        string
	Lowers      []string // top-down
	Upper, Work string   // both "" for a read-only union
	// CreateWork makes Work (mode 0700) when it does not exist yet.
	CreateWork  bool
	XattrPrefix string // "" lets the union pick
	// RedirectDir is the kernel's redirect_dir option: on, follow, nofollow or off; ""
	// lets the union pick (on, or nofollow with the user.overlay. prefix).
	RedirectDir string
	// Unicode is how names compare (billyunion.Options.Unicode): exact or insensitive;
	// "" is exact.
	Unicode string
	// Index is the kernel's index option: on or off; "" for the union's
	// default, on (billyunion.Options.Index).
	Index string
	// RefuseAppleDouble refuses new "._name" and ".DS_Store" entries
	// (nfs3.Config.RefuseAppleDouble).
	RefuseAppleDouble bool
	// QuotaBytes and QuotaInodes limit the upper (billyunion.Options.QuotaBytes,
	// QuotaInodes; docs/quotas.md); 0 is no limit.
	QuotaBytes, QuotaInodes uint64
	// Clients are who may mount and use the export, and how (exports(5)'s rules).
	Clients clients.Rules
}

// Config is the server's exports and tunables.
type Config struct {
	// Exports are served from the start; at least one, paths distinct.
	Exports []Export
	// DirCacheEntries bounds the merged listings each union keeps (0: the union's
	// default); HandleCacheEntries each export's handle → path cache (0: its default).
	DirCacheEntries, HandleCacheEntries int
	// ActAsCaller makes what a client creates its user's; the process must be root.
	ActAsCaller bool
	// NLM serves the lock manager (NLM 1, 3, 4 and NSM 1: ServeLocks, ServeLocksUDP).
	NLM bool
	// Grace is the grace period after a restart in which clients reclaim their locks;
	// it applies only when the previous run had clients that may hold locks.
	Grace time.Duration
	// LockState is the status monitor's directory; "" is Work/ovlnfs-nsm of the one
	// export when there is one export with a workdir, else nothing is kept (a restart
	// then tells no client).
	LockState string
	// PeerPortmapPort is where clients' portmappers are asked for their lock manager and
	// status monitor (0: 111); tests move it.
	PeerPortmapPort uint16
	// Metrics, when set, counts every NFS call and reports each export's union
	// (internal/metrics).
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Server is a running set of exports.
type Server struct {
	cfg Config // the tunables; cfg.Exports is what New was given
	// exports is the set calls are routed by, replaced whole by Reconfigure.
	exports atomic.Pointer[exportSet]
	// reconfigure orders Reconfigure calls, snapshots, resets and Close.
	reconfigure sync.Mutex
	// shared holds the lower work of exports over the same lowers, by sharedKey;
	// guarded by reconfigure.
	shared map[string]*sharedLowers
	// nfsProcs is the NFSv3 dispatch table's shape (names, flags), the same for every
	// export; routing fills in the handlers.
	nfsProcs []oncrpc.Procedure
	bridge   *gonfs.Bridge
	rpc      *oncrpc.Server // NFSv3 and MOUNT, over TCP
	udp      *oncrpc.Server // MOUNT, over UDP
	lock     *locking       // nil without Config.NLM
	logger   *slog.Logger
	// held are the workdir locks NewStandby took, while New opens the exports; nil
	// otherwise (no other goroutine sees the server then).
	held map[string]*workdirLock
}

// New opens the exports' unions and builds everything that serves them. Its errors say
// what is wrong with the configuration in one line.
func New(cfg Config) (*Server, error) {
	return newServer(cfg, nil)
}

// NewStandby is New for a standby gateway: while another process holds an export's
// workdir (the active gateway over the same shared directories), it waits for the lock
// instead of refusing, and opens the exports once it holds every workdir: their state,
// and the lock manager's monitor list, are read only then, as the previous holder left
// them. It returns ctx's error if ctx ends first. waiting is called once per busy
// workdir before the wait, with the holder's pid when known.
func NewStandby(ctx context.Context, cfg Config, waiting func(workdir, holder string)) (*Server, error) {
	if len(cfg.Exports) == 0 {
		return nil, errors.New("server: no export to serve")
	}
	held := map[string]*workdirLock{}
	release := func() {
		for _, l := range held {
			_ = l.release()
		}
	}
	for _, e := range cfg.Exports {
		if e.Upper == "" || held[e.Work] != nil {
			continue
		}
		l, err := waitWorkdir(ctx, e.Work, e.CreateWork, waiting)
		if err != nil {
			release()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errorf(&e, "cannot lock workdir %s: %v", e.Work, unwrapPathError(err))
		}
		held[e.Work] = l
	}
	s, err := newServer(cfg, held)
	if err != nil {
		release() // those not handed to an export (openExport took the others)
		return nil, err
	}
	release()
	return s, nil
}

// newServer is New; held are workdir locks taken already (NewStandby), which the exports
// take over (each removed from the map as its export takes it).
func newServer(cfg Config, held map[string]*workdirLock) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Exports) == 0 {
		return nil, errors.New("server: no export to serve")
	}
	s := &Server{cfg: cfg, logger: cfg.Logger, shared: map[string]*sharedLowers{}}
	s.held = held
	set, err := s.openSet(cfg.Exports)
	s.held = nil
	if err != nil {
		return nil, err
	}
	s.exports.Store(set)
	if err := s.assemble(); err != nil {
		set.retireAll()
		return nil, err
	}
	return s, nil
}

func (s *Server) assemble() error {
	cfg, logger := s.cfg, s.logger
	// Any export's table has the shape of all of them.
	for _, e := range s.exports.Load().byID {
		s.nfsProcs = e.nfs.Program().Procedures
		break
	}
	var err error
	if s.bridge, err = gonfs.New(gonfs.Config{Mount: s.mountTarget, Logger: logger}); err != nil {
		return err
	}
	mnt, err := mount.New(mount.Config{Mnt: s.bridge.Forward, Exports: s.exportList, Logger: logger})
	if err != nil {
		s.bridge.Close()
		return err
	}
	rpc, err := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{s.nfsProgram(), mnt.Program()}, Logger: logger})
	if err != nil {
		s.bridge.Close()
		return err
	}
	// Over UDP the same MOUNT program (one DUMP list), without NFS.
	udp, err := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{mnt.Program()}, Logger: logger})
	if err != nil {
		s.bridge.Close()
		return err
	}
	s.rpc, s.udp = rpc, udp
	if cfg.NLM {
		if s.lock, err = newLocking(cfg, s.lockKey, logger); err != nil {
			s.bridge.Close()
			return err
		}
	}
	if m := cfg.Metrics; m != nil {
		m.AddGauge("ovlnfs_nfs_connections", "TCP connections to NFS and MOUNT being served.",
			func() float64 { return float64(s.rpc.Connections()) })
		if s.lock != nil {
			m.AddGauge("ovlnfs_locks_held", "Byte ranges locked through the lock manager (NLM).",
				func() float64 { return float64(s.lock.table.Held()) })
		}
	}
	return nil
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

// Close stops the lock manager's calls to clients, go-nfs, and closes every export (its
// open files, its union, its workdir lock); call it after Shutdown.
func (s *Server) Close() error {
	s.reconfigure.Lock()
	defer s.reconfigure.Unlock()
	var err error
	if s.lock != nil {
		err = s.lock.close()
	}
	s.bridge.Close()
	set := s.exports.Load()
	s.exports.Store(&exportSet{byID: map[uint32]*export{}})
	return errors.Join(err, set.retireAll())
}

// errorf is a configuration error about one export, in one line.
func errorf(e *Export, format string, args ...any) error {
	return fmt.Errorf("export %s: %s", e.Path, fmt.Sprintf(format, args...))
}
