package portmap

import (
	"slices"
	"sync"
)

// maxRegistered bounds the mappings SET may add: the ones this process serves come on top.
const maxRegistered = 256

// mapping is one line of the portmapper's list.
type mapping struct {
	prog, vers   uint32
	netid, uaddr string
	owner        string
	fixed        bool // this process's own: never removed or replaced
}

// registry is the list, in the order the mappings were made (DUMP's order).
type registry struct {
	mu      sync.Mutex
	entries []mapping // guarded by mu
	added   int       // entries not fixed; guarded by mu
}

func newRegistry() *registry { return &registry{} }

// add appends a mapping unless one of its program, version and netid exists.
func (r *registry) add(m mapping) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.indexLocked(m.prog, m.vers, m.netid) >= 0 {
		return false
	}
	r.entries = append(r.entries, m)
	return true
}

// set is SET: a mapping of a program, version and netid already there succeeds only if
// it names the same address (then nothing changes); a new one is added while there is room.
func (r *registry) set(m mapping) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := r.indexLocked(m.prog, m.vers, m.netid); i >= 0 {
		return r.entries[i].uaddr == m.uaddr
	}
	if r.added >= maxRegistered {
		return false
	}
	m.fixed = false
	r.entries = append(r.entries, m)
	r.added++
	return true
}

// unset is UNSET: it removes the mappings of a program and version on the netids given
// (every netid when none is given), except this process's own; false when one of those
// matched.
func (r *registry) unset(prog, vers uint32, netids ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := true
	r.entries = slices.DeleteFunc(r.entries, func(m mapping) bool {
		if m.prog != prog || m.vers != vers || (len(netids) > 0 && !slices.Contains(netids, m.netid)) {
			return false
		}
		if m.fixed {
			ok = false
			return false
		}
		r.added--
		return true
	})
	return ok
}

// find returns the mapping of a program and version on a netid; with anyVersion, another
// version of the program when that one is missing (a client then learns the versions
// from the server's PROG_MISMATCH).
func (r *registry) find(prog, vers uint32, netid string, anyVersion bool) (mapping, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := r.indexLocked(prog, vers, netid); i >= 0 {
		return r.entries[i], true
	}
	if anyVersion {
		for _, m := range r.entries {
			if m.prog == prog && m.netid == netid {
				return m, true
			}
		}
	}
	return mapping{}, false
}

// list returns a copy of the list.
func (r *registry) list() []mapping {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries)
}

func (r *registry) indexLocked(prog, vers uint32, netid string) int {
	return slices.IndexFunc(r.entries, func(m mapping) bool {
		return m.prog == prog && m.vers == vers && m.netid == netid
	})
}
