package server

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
)

// LockStateDir is the status monitor's directory in the workdir.
const LockStateDir = "ovlnfs-nsm"

// locking is the lock manager: its table, status monitor, NLM server and their RPC
// server (NLM and NSM share its sockets).
type locking struct {
	table *locks.Manager
	mon   *nsm.Monitor
	nlm   *nlm.Server
	rpc   *oncrpc.Server
	grace time.Duration // the grace period this run has (0: none)
}

func newLocking(cfg Config, key func(fh []byte, client netip.Addr) (string, error), logger *slog.Logger) (*locking, error) {
	dir := cfg.LockState
	if dir == "" && len(cfg.Exports) == 1 && cfg.Exports[0].Work != "" {
		dir = filepath.Join(cfg.Exports[0].Work, LockStateDir)
	}
	if dir == "" {
		logger.Warn("the lock manager keeps no state: after a restart, clients are not told to reclaim their locks (give a state directory)")
	}
	l := &locking{}
	var err error
	// The monitor tells the lock manager of reboots; the lock manager is made after it.
	l.mon, err = nsm.New(nsm.Config{Dir: dir, PortmapPort: cfg.PeerPortmapPort, Logger: logger.With("component", "nsm"),
		Rebooted: func(sender netip.Addr, monName string, state int32) {
			if l.nlm != nil {
				l.nlm.Rebooted(sender, monName, state)
			}
		}})
	if err != nil {
		return nil, err
	}
	// Only a restart after clients that may hold locks needs a grace period.
	if len(l.mon.Previous()) > 0 {
		l.grace = cfg.Grace
	}
	l.table = locks.New(locks.Config{Grace: l.grace})
	l.nlm, err = nlm.New(nlm.Config{Locks: l.table, Monitor: l.mon, Key: key, PortmapPort: cfg.PeerPortmapPort,
		Logger: logger.With("component", "nlm")})
	if err != nil {
		_ = l.mon.Close()
		return nil, err
	}
	l.rpc, err = oncrpc.New(oncrpc.Config{Programs: append(l.nlm.Programs(), l.mon.Program()), Logger: logger})
	if err != nil {
		l.nlm.Close()
		_ = l.mon.Close()
		return nil, err
	}
	return l, nil
}

func (l *locking) close() error {
	l.nlm.Close()
	return l.mon.Close()
}

var errNoLocking = errors.New("server: built without the lock manager (Config.NLM)")

// ServeLocks answers NLM and NSM over TCP on l until l is closed (it then returns nil).
func (s *Server) ServeLocks(l net.Listener) error {
	if s.lock == nil {
		return errNoLocking
	}
	err := s.lock.rpc.Serve(l)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ServeLocksUDP answers NLM and NSM over UDP on pc until pc is closed or Shutdown.
func (s *Server) ServeLocksUDP(pc *net.UDPConn) error {
	if s.lock == nil {
		return errNoLocking
	}
	err := s.lock.rpc.ServeUDP(pc)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// NotifyRestart starts telling the previous run's clients that the server restarted, so
// that they reclaim their locks; call it once the lock manager's sockets serve.
func (s *Server) NotifyRestart() {
	if s.lock != nil {
		s.lock.mon.NotifyRestart()
	}
}

// Grace is the grace period this run started with (0: none, or no lock manager), and
// the number of clients of the previous run that may reclaim locks.
func (s *Server) Grace() (time.Duration, int) {
	if s.lock == nil {
		return 0, 0
	}
	return s.lock.grace, len(s.lock.mon.Previous())
}

// LockServices lists the lock manager for the portmapper: NLM 4, 3 and 1 and NSM 1 at
// its TCP listener's and UDP socket's addresses (udp nil: none).
func LockServices(tcp, udp net.Addr) ([]portmap.Service, error) {
	var out []portmap.Service
	for _, a := range []net.Addr{tcp, udp} {
		if a == nil {
			continue
		}
		for _, pv := range [][2]uint32{{nlm.ProgramNumber, nlm.Version4}, {nlm.ProgramNumber, nlm.Version3},
			{nlm.ProgramNumber, nlm.Version1}, {nsm.ProgramNumber, nsm.Version}} {
			s, err := portmap.ServicesAt(pv[0], pv[1], a)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
	}
	return out, nil
}
