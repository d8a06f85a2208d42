// Package nsm is the Network Status Monitor (program 100024 version 1; XNFS chapter 11)
// as the lock manager's server side needs it: it remembers, on disk, every client
// (peer) that takes a lock, so that after a restart this server can tell each one it
// restarted (SM_NOTIFY to the peer's status monitor) and the peers reclaim their locks
// during the grace period; and it takes the SM_NOTIFY a peer sends when it rebooted, so
// that the locks it held are dropped (Config.Rebooted).
//
// It is also a small statd for the lock managers of this host (SM_MON, SM_UNMON,
// SM_UNMON_ALL, from a loopback address only, as rpc.statd takes them): a monitor
// request is kept in memory and called back (my_prog, my_vers, my_proc with sm_status)
// when the monitored host sends SM_NOTIFY. Those requests are not persisted and cause no
// notices of their own: this process restarting is not this host rebooting.
//
// The state number (odd while running, even once stopped, as statd keeps it) and the
// peers live in Config.Dir (WORKDIR/ovlnfs-nsm): "state", and one file per peer under
// "peers/", each written to a temporary file, synced and renamed into place, the
// directory synced after: a peer is on disk before the first lock it takes is granted.
//
// Files:
//
//	nsm.go      constants, Peer, Config, Monitor, New, Close, the dispatch table
//	store.go    the directory: state number and peer files, crash-safe writes
//	args.go     the protocol's structures, decoded exactly
//	stat.go     SM_STAT
//	mon.go      SM_MON
//	unmon.go    SM_UNMON, SM_UNMON_ALL
//	notify.go   SM_NOTIFY received: a peer rebooted
//	restart.go  SM_NOTIFY sent: telling the previous run's peers of the restart
//
// Lock order: Monitor.io (the directory: held across a file write and its syncs, by
// Monitor and Unmonitor only), then Monitor.mu (the peers and the monitor requests, held
// for map and slice operations only). No lock is held across a network call.
package nsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// The program.
const (
	ProgramNumber = 100024
	Version       = 1
)

// Proc is an NSM procedure number.
type Proc uint32

// The procedures. SM_SIMU_CRASH is not offered (PROC_UNAVAIL).
const (
	ProcNull      Proc = 0
	ProcStat      Proc = 1
	ProcMon       Proc = 2
	ProcUnmon     Proc = 3
	ProcUnmonAll  Proc = 4
	ProcSimuCrash Proc = 5
	ProcNotify    Proc = 6
)

// res values of sm_stat_res.
const (
	statSucc = 0
	statFail = 1
)

// Peer is a client of the lock manager: where it is, what it calls itself (the NLM
// caller_name), and the address of this server it reached, which is the name it knows
// this server by (the mon_name of the notices sent to it).
type Peer struct {
	Addr   netip.Addr
	Name   string
	Server netip.Addr
}

// Key names the peer: its address and caller name. The lock manager uses it as the host
// of the locks' owners.
func (p Peer) Key() string { return p.Addr.String() + " " + p.Name }

// Config is where the monitor keeps its state and whom it tells.
type Config struct {
	// Dir holds the state number and the peers; "" keeps them in memory (nothing is
	// known after a restart, and nobody is told of it).
	Dir string
	// Rebooted is called when a host says it rebooted (SM_NOTIFY): sender is the
	// address the notice came from, monName the name it gave, state its new state.
	Rebooted func(sender netip.Addr, monName string, state int32)
	// PortmapPort is where peers' portmappers are asked for their status monitor, and
	// this host's for the lock managers to call back (0: 111).
	PortmapPort uint16
	// NotifyFor bounds how long the previous run's peers are retried after a restart
	// (0: 10 minutes).
	NotifyFor time.Duration
	// MaxPeers bounds the peers remembered (0: 4096); MaxWatches the monitor requests of
	// local lock managers (0: 1024).
	MaxPeers, MaxWatches int
	Logger               *slog.Logger
}

// Monitor is the status monitor.
type Monitor struct {
	cfg      Config
	logger   *slog.Logger
	state    int32
	previous []Peer

	io sync.Mutex // the directory's writes

	mu      sync.Mutex
	peers   map[string]Peer // by Key; guarded by mu
	watches []watch         // SM_MON requests; guarded by mu
	sent    map[string]bool // the mon_names of the notices sent; guarded by mu

	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	running sync.WaitGroup // notices and callbacks under way
}

// watch is one SM_MON request: call my_prog, my_vers, my_proc on this host with priv
// when mon_name says it rebooted.
type watch struct {
	monName          string
	myName           string
	prog, vers, proc uint32
	priv             [privSize]byte
	monAddr          netip.Addr // mon_name as an address, when it is one
}

// ErrTooManyPeers is Monitor's error past Config.MaxPeers.
var ErrTooManyPeers = errors.New("nsm: too many peers monitored")

// New opens the directory (creating it), reads the previous run's state number and
// peers, and records the new state number before it returns.
func New(cfg Config) (*Monitor, error) {
	if cfg.PortmapPort == 0 {
		cfg.PortmapPort = 111
	}
	if cfg.NotifyFor <= 0 {
		cfg.NotifyFor = 10 * time.Minute
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = 4096
	}
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = 1024
	}
	if cfg.Rebooted == nil {
		cfg.Rebooted = func(netip.Addr, string, int32) {}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{cfg: cfg, logger: logger, peers: make(map[string]Peer), sent: make(map[string]bool), state: 1}
	if cfg.Dir != "" {
		old, peers, err := m.load()
		if err != nil {
			return nil, err
		}
		// Odd while up: the next odd number after the last one written.
		m.state = old + 1
		if old%2 != 0 {
			m.state = old + 2
		}
		if err := m.writeState(m.state); err != nil {
			return nil, err
		}
		m.previous = peers
		for _, p := range peers {
			m.peers[p.Key()] = p
		}
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// State is this run's state number.
func (m *Monitor) State() int32 { return m.state }

// Previous lists the peers the previous run had monitored: the clients that may hold
// locks to reclaim, and to be told of the restart.
func (m *Monitor) Previous() []Peer { return append([]Peer(nil), m.previous...) }

// Peers lists the peers monitored now (the previous run's among them until forgotten).
func (m *Monitor) Peers() []Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Peer, 0, len(m.peers))
	for _, p := range m.peers {
		out = append(out, p)
	}
	return out
}

// Monitor remembers a peer, on disk before it returns, unless it is remembered already.
func (m *Monitor) Monitor(p Peer) error {
	key := p.Key()
	m.mu.Lock()
	old, known := m.peers[key]
	m.mu.Unlock()
	if known && old.Server == p.Server {
		return nil
	}
	m.io.Lock()
	defer m.io.Unlock()
	m.mu.Lock()
	old, known = m.peers[key]
	full := !known && len(m.peers) >= m.cfg.MaxPeers
	m.mu.Unlock()
	switch {
	case known && old.Server == p.Server:
		return nil
	case full:
		return ErrTooManyPeers
	}
	if m.cfg.Dir != "" {
		if err := m.writePeer(p); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.peers[key] = p
	m.mu.Unlock()
	m.logger.Debug("monitoring", "peer", p.Addr.String(), "name", p.Name)
	return nil
}

// Unmonitor forgets a peer (it holds nothing any more).
func (m *Monitor) Unmonitor(p Peer) error {
	key := p.Key()
	m.io.Lock()
	defer m.io.Unlock()
	m.mu.Lock()
	_, known := m.peers[key]
	delete(m.peers, key)
	m.mu.Unlock()
	if !known || m.cfg.Dir == "" {
		return nil
	}
	m.logger.Debug("no longer monitoring", "peer", p.Addr.String(), "name", p.Name)
	return m.removePeer(p)
}

// Close stops the notices and callbacks under way and records the state number of a
// stopped monitor (even).
func (m *Monitor) Close() error {
	m.cancel()
	m.running.Wait()
	if m.cfg.Dir == "" {
		return nil
	}
	if err := m.writeState(m.state + 1); err != nil {
		return fmt.Errorf("nsm: recording the stop: %w", err)
	}
	return nil
}

// Program is NSM's dispatch table.
func (m *Monitor) Program() oncrpc.Program {
	table := []struct {
		proc Proc
		name string
		fn   oncrpc.Handler
	}{
		{ProcNull, "NULL", func(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error { return noArgs(call) }},
		{ProcStat, "STAT", m.stat},
		{ProcMon, "MON", m.mon},
		{ProcUnmon, "UNMON", m.unmon},
		{ProcUnmonAll, "UNMON_ALL", m.unmonAll},
		{ProcNotify, "NOTIFY", m.notify},
	}
	procs := make([]oncrpc.Procedure, ProcNotify+1)
	for _, e := range table {
		procs[e.proc] = oncrpc.Procedure{Name: e.name, Handle: e.fn}
	}
	return oncrpc.Program{Name: "NSM", Number: ProgramNumber, Version: Version, Procedures: procs}
}
