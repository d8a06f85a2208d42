package nlm

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// The program and its versions.
const (
	ProgramNumber = 100021
	Version1      = 1
	Version3      = 3
	Version4      = 4
)

// Proc is an NLM procedure number.
type Proc uint32

// The procedures. Versions 3 and 4 add SHARE, UNSHARE, NM_LOCK and FREE_ALL to
// version 1's.
const (
	ProcNull       Proc = 0
	ProcTest       Proc = 1
	ProcLock       Proc = 2
	ProcCancel     Proc = 3
	ProcUnlock     Proc = 4
	ProcGranted    Proc = 5
	ProcTestMsg    Proc = 6
	ProcLockMsg    Proc = 7
	ProcCancelMsg  Proc = 8
	ProcUnlockMsg  Proc = 9
	ProcGrantedMsg Proc = 10
	ProcTestRes    Proc = 11
	ProcLockRes    Proc = 12
	ProcCancelRes  Proc = 13
	ProcUnlockRes  Proc = 14
	ProcGrantedRes Proc = 15
	ProcShare      Proc = 20
	ProcUnshare    Proc = 21
	ProcNMLock     Proc = 22
	ProcFreeAll    Proc = 23
)

// The statuses (nlm_stats of versions 1 and 3: the first five; nlm4_stats: all).
const (
	StatGranted        = 0
	StatDenied         = 1
	StatDeniedNoLocks  = 2
	StatBlocked        = 3
	StatDeniedGrace    = 4
	StatDeadlock       = 5 // version 4 only, as are the rest
	StatROFS           = 6
	StatStaleFH        = 7
	StatFBig           = 8
	StatFailed         = 9
	lastStatVersion1_3 = StatDeniedGrace
	lastStatVersion4   = StatFailed
)

func lastStat(vers uint32) uint32 {
	if vers == Version4 {
		return lastStatVersion4
	}
	return lastStatVersion1_3
}

// stat is a status in a version's terms: versions 1 and 3 have no deadlock (denied) and
// no stale handle (no locks).
func stat(s uint32, vers uint32) uint32 {
	if vers == Version4 || s <= lastStatVersion1_3 {
		return s
	}
	if s == StatDeadlock {
		return StatDenied
	}
	return StatDeniedNoLocks
}

// statusOf is the protocol's word for a lock table outcome.
func statusOf(s locks.Status) uint32 {
	switch s {
	case locks.Granted:
		return StatGranted
	case locks.Denied:
		return StatDenied
	case locks.Blocked:
		return StatBlocked
	case locks.Grace:
		return StatDeniedGrace
	case locks.Deadlock:
		return StatDeadlock
	}
	return StatDeniedNoLocks
}

// Monitor is what the lock manager needs of the status monitor (nsm.Monitor).
type Monitor interface {
	// Monitor remembers a client, durably, before its first lock is granted.
	Monitor(nsm.Peer) error
	// Unmonitor forgets a client that holds nothing any more.
	Unmonitor(nsm.Peer) error
	// Peers are the clients remembered, the previous run's among them.
	Peers() []nsm.Peer
}

// Config is what the lock manager serves with.
type Config struct {
	Locks   *locks.Manager
	Monitor Monitor
	// Key names the file a handle is of (the object's identity, the same for every
	// handle of it) for the client at an address; an error is a stale handle, or one the
	// client may not use (its export's rules do not admit it), answered alike.
	Key func(fh []byte, client netip.Addr) (string, error)
	// Name is this server's name in the GRANTED calls it makes (default: the host name).
	Name string
	// PortmapPort is where clients' portmappers are asked for their lock manager (0: 111).
	PortmapPort uint16
	// GrantAttempts bounds the tries to announce a grant (0: 6); GrantRetry is the wait
	// before the second try, doubled after each (0: 1 s); CallTimeout bounds one call to
	// a client, its portmapper lookup included (0: 5 s).
	GrantAttempts           int
	GrantRetry, CallTimeout time.Duration
	// MaxCallbacks bounds the calls to clients under way at once (0: 16), MaxPending the
	// grants and _RES messages waiting to go (0: 1024; past it a _RES is dropped, and the
	// client asks again, and a grant is released).
	MaxCallbacks, MaxPending int
	// IdleUnmonitor is how long a client holds nothing before it is forgotten, and not
	// told of a restart any more (0: 5 minutes).
	IdleUnmonitor time.Duration
	Logger        *slog.Logger
}

// Server answers NLM calls.
type Server struct {
	cfg    Config
	locks  *locks.Manager
	mon    Monitor
	logger *slog.Logger

	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	running sync.WaitGroup // callbacks, the janitor
	slots   chan struct{}  // calls to clients under way
	pending atomic.Int64   // callbacks started and not finished
	cookies atomic.Uint64  // of the GRANTED calls made
	janitor *time.Ticker

	mu       sync.Mutex
	hosts    map[string]*host         // by nsm.Peer.Key; guarded by mu
	delivers map[grantKey]*delivery   // grants being announced; guarded by mu
	awaiting map[string]chan<- uint32 // GRANTED_MSG cookie -> its GRANTED_RES; guarded by mu
}

// New builds the lock manager and starts its janitor; Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Locks == nil || cfg.Monitor == nil || cfg.Key == nil {
		return nil, errors.New("nlm: Locks, Monitor and Key are needed")
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
		if cfg.Name == "" {
			cfg.Name = "ovlnfs"
		}
	}
	if cfg.PortmapPort == 0 {
		cfg.PortmapPort = 111
	}
	if cfg.GrantAttempts <= 0 {
		cfg.GrantAttempts = 6
	}
	if cfg.GrantRetry <= 0 {
		cfg.GrantRetry = time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.MaxCallbacks <= 0 {
		cfg.MaxCallbacks = 16
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.IdleUnmonitor <= 0 {
		cfg.IdleUnmonitor = 5 * time.Minute
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, locks: cfg.Locks, mon: cfg.Monitor, logger: logger,
		slots: make(chan struct{}, cfg.MaxCallbacks), hosts: make(map[string]*host),
		delivers: make(map[grantKey]*delivery), awaiting: make(map[string]chan<- uint32)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	now := time.Now()
	for _, p := range cfg.Monitor.Peers() {
		s.hosts[p.Key()] = &host{peer: p, seen: now, monitored: true}
	}
	s.janitor = time.NewTicker(max(cfg.IdleUnmonitor/4, time.Second))
	s.running.Go(s.sweep)
	return s, nil
}

// Close stops the janitor and the callbacks under way.
func (s *Server) Close() {
	s.cancel()
	s.janitor.Stop()
	s.running.Wait()
}

// Programs are NLM's dispatch tables, versions 1, 3 and 4.
func (s *Server) Programs() []oncrpc.Program {
	null := func(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
		if noArgs(call.Args) != nil {
			return oncrpc.ErrGarbageArgs
		}
		return nil
	}
	table := []struct {
		proc  Proc
		name  string
		fn    oncrpc.Handler
		since uint32 // the first version with it
	}{
		{ProcNull, "NULL", null, Version1},
		{ProcTest, "TEST", s.test, Version1},
		{ProcLock, "LOCK", s.lock, Version1},
		{ProcCancel, "CANCEL", s.cancelProc, Version1},
		{ProcUnlock, "UNLOCK", s.unlock, Version1},
		{ProcGranted, "GRANTED", s.granted, Version1},
		{ProcTestMsg, "TEST_MSG", s.testMsg, Version1},
		{ProcLockMsg, "LOCK_MSG", s.lockMsg, Version1},
		{ProcCancelMsg, "CANCEL_MSG", s.cancelMsg, Version1},
		{ProcUnlockMsg, "UNLOCK_MSG", s.unlockMsg, Version1},
		{ProcGrantedMsg, "GRANTED_MSG", s.grantedMsg, Version1},
		{ProcTestRes, "TEST_RES", s.testRes, Version1},
		{ProcLockRes, "LOCK_RES", s.res, Version1},
		{ProcCancelRes, "CANCEL_RES", s.res, Version1},
		{ProcUnlockRes, "UNLOCK_RES", s.res, Version1},
		{ProcGrantedRes, "GRANTED_RES", s.grantedRes, Version1},
		{ProcShare, "SHARE", s.share, Version3},
		{ProcUnshare, "UNSHARE", s.unshare, Version3},
		{ProcNMLock, "NM_LOCK", s.nmLock, Version3},
		{ProcFreeAll, "FREE_ALL", s.freeAll, Version3},
	}
	var out []oncrpc.Program
	for _, vers := range []uint32{Version1, Version3, Version4} {
		n := ProcGrantedRes + 1
		if vers >= Version3 {
			n = ProcFreeAll + 1
		}
		procs := make([]oncrpc.Procedure, n)
		for _, e := range table {
			if vers >= e.since {
				procs[e.proc] = oncrpc.Procedure{Name: e.name, Handle: e.fn}
			}
		}
		name := map[uint32]string{Version1: "NLM1", Version3: "NLM3", Version4: "NLM4"}[vers]
		out = append(out, oncrpc.Program{Name: name, Number: ProgramNumber, Version: vers, Procedures: procs})
	}
	return out
}
