// Package locks is the lock table of the network lock manager: the byte-range locks and
// DOS share reservations that NFS clients hold on files through NLM, in memory. It knows
// nothing of RPC or of the filesystem: a file is an opaque key (the object's identity),
// an owner is a client host, a process id (svid) and an owner handle, as the protocol
// gives them.
//
// Locks follow POSIX record-lock rules: an owner's ranges never overlap one another, a
// new lock replaces the owner's overlapping ranges (splitting a range of the other mode,
// merging with overlapping or adjacent ranges of the same mode), an unlock splits what it
// cuts through. Two owners' ranges overlap only if both are shared. A request that
// conflicts either fails or, if it may block, waits in the file's queue; every release
// on a file grants the waiters that no longer conflict, in arrival order, and hands the
// grants back to the caller to announce (the GRANTED callback). Waiting is never done
// here: no call blocks.
//
// After a restart there is a grace period (Config.Grace): only reclaims are taken then,
// and a reclaim is taken only then.
//
// Memory is bounded: hosts, locks per host and in all, waiters and shares per host
// (Config); a request past a bound is refused with NoLocks and changes nothing.
//
// Files:
//
//	locks.go   Config, Manager, New, Owner, Lock, Status, Grant; grace
//	ranges.go  Range: offsets and lengths, overlap, splitting and merging one owner's ranges
//	lock.go    Test, Lock, Unlock, and granting waiters after a release
//	wait.go    the blocking queue: waiters, Cancel, deadlock detection
//	share.go   Share, Unshare: DOS share reservations
//	host.go    per-host accounting and limits, DropHosts, Active
//
// Lock order: Manager.mu is a leaf. It is held for the table operation only; grants are
// returned to the caller, which makes its network calls with no lock held.
package locks

import (
	"sync"
	"time"
)

// Owner is who holds a lock: a client host (the lock manager's key for it), a process on
// it (svid) and the owner handle (oh) the client sent.
type Owner struct {
	Host string
	SVID int32
	OH   string
}

// Lock is one byte range held by one owner.
type Lock struct {
	Owner     Owner
	Exclusive bool
	Range     Range
}

// Status is the outcome of a request.
type Status int

// The outcomes.
const (
	Granted  Status = iota
	Denied          // a conflicting lock or share is held (and the request may not wait)
	Blocked         // the request waits in the queue; a Grant follows when it can be had
	Grace           // in the grace period and not a reclaim, or a reclaim after it
	NoLocks         // a bound on hosts, locks, waiters or shares was reached
	Deadlock        // waiting would close a cycle of owners waiting for one another
)

var statusNames = [...]string{"granted", "denied", "blocked", "grace", "nolocks", "deadlock"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Grant is a waiter's lock, granted when a release let it through. Payload is what the
// waiter's Lock request carried.
type Grant struct {
	File    string
	Lock    Lock
	Payload any
}

// Config bounds the table. A zero field takes its default.
type Config struct {
	// Grace is how long after New only reclaims are taken (0: no grace period).
	Grace time.Duration
	// MaxHosts bounds the hosts holding or waiting for anything (default 1024).
	MaxHosts int
	// MaxLocksPerHost bounds one host's ranges (default 4096); MaxLocks all ranges
	// (default 65536).
	MaxLocksPerHost, MaxLocks int
	// MaxWaitersPerHost bounds one host's waiting requests (default 64).
	MaxWaitersPerHost int
	// MaxSharesPerHost bounds one host's share reservations (default 1024).
	MaxSharesPerHost int
	// Now is the clock (default time.Now), for tests of the grace period.
	Now func() time.Time
}

// The defaults of Config.
const (
	DefaultMaxHosts          = 1024
	DefaultMaxLocksPerHost   = 4096
	DefaultMaxLocks          = 1 << 16
	DefaultMaxWaitersPerHost = 64
	DefaultMaxSharesPerHost  = 1024
)

// Manager is the lock table.
type Manager struct {
	cfg      Config
	graceEnd time.Time

	mu    sync.Mutex
	files map[string]*file // guarded by mu; a file with nothing held, waited for or shared is removed
	hosts map[string]*host // guarded by mu; likewise
	locks int              // ranges held in all; guarded by mu
}

// file is what is held on one file.
type file struct {
	held    []Lock
	waiters []*waiter
	shares  []share
}

func (f *file) empty() bool { return len(f.held) == 0 && len(f.waiters) == 0 && len(f.shares) == 0 }

// New returns an empty table whose grace period, if any, starts now.
func New(cfg Config) *Manager {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxHosts, DefaultMaxHosts)
	def(&cfg.MaxLocksPerHost, DefaultMaxLocksPerHost)
	def(&cfg.MaxLocks, DefaultMaxLocks)
	def(&cfg.MaxWaitersPerHost, DefaultMaxWaitersPerHost)
	def(&cfg.MaxSharesPerHost, DefaultMaxSharesPerHost)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, files: make(map[string]*file), hosts: make(map[string]*host)}
	if cfg.Grace > 0 {
		m.graceEnd = cfg.Now().Add(cfg.Grace)
	}
	return m
}

// InGrace reports whether the grace period is still on.
func (m *Manager) InGrace() bool { return m.GraceLeft() > 0 }

// GraceLeft is how much of the grace period is left.
func (m *Manager) GraceLeft() time.Duration {
	if m.graceEnd.IsZero() {
		return 0
	}
	return max(m.graceEnd.Sub(m.cfg.Now()), 0)
}

// graceRefuses reports whether the grace period refuses a request: during it anything
// but a reclaim, after it a reclaim.
func (m *Manager) graceRefuses(reclaim bool) bool { return m.InGrace() != reclaim }

// fileLocked returns the file's entry, made if absent; mu held.
func (m *Manager) fileLocked(key string) *file {
	f := m.files[key]
	if f == nil {
		f = &file{}
		m.files[key] = f
	}
	return f
}

// tidyLocked drops a file's entry once nothing is on it; mu held.
func (m *Manager) tidyLocked(key string, f *file) {
	if f.empty() {
		delete(m.files, key)
	}
}

// Locks returns what is held on a file, for tests and diagnostics.
func (m *Manager) Locks(key string) []Lock {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[key]
	if f == nil {
		return nil
	}
	return append([]Lock(nil), f.held...)
}

// Held is the number of byte ranges locked, over every file and owner.
func (m *Manager) Held() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.locks
}
