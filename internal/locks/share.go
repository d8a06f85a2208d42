package locks

// Share reservations (DOS share modes): an open of a file declares the access it wants
// and the access it denies others. Bits: 1 read, 2 write (NLM's fsh_access and fsh_mode
// use these values).
const (
	ShareRead  = 1
	ShareWrite = 2
)

// share is one owner's reservation on a file. Its owner's SVID is not part of it.
type share struct {
	owner        Owner
	access, deny uint8
}

// Share reserves a file for the owner (its SVID is ignored): Denied when another owner's
// reservation denies the access asked for, or asks for the access this one denies. The
// owner's own reservation on the file, if any, is replaced.
func (m *Manager) Share(key string, o Owner, access, deny uint8, reclaim bool) Status {
	if m.graceRefuses(reclaim) {
		return Grace
	}
	o.SVID = 0
	access, deny = access&(ShareRead|ShareWrite), deny&(ShareRead|ShareWrite)
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.fileLocked(key)
	defer m.tidyLocked(key, f)
	for _, s := range f.shares {
		if s.owner != o && (s.deny&access != 0 || s.access&deny != 0) {
			return Denied
		}
	}
	for i := range f.shares {
		if f.shares[i].owner == o {
			f.shares[i].access, f.shares[i].deny = access, deny
			return Granted
		}
	}
	h, ok := m.hostLocked(o.Host)
	if !ok || h.shares >= m.cfg.MaxSharesPerHost {
		m.tidyHostLocked(o.Host)
		return NoLocks
	}
	h.shares++
	f.shares = append(f.shares, share{owner: o, access: access, deny: deny})
	return Granted
}

// Unshare removes the owner's reservation on a file (its SVID is ignored), if it has one.
func (m *Manager) Unshare(key string, o Owner) {
	o.SVID = 0
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[key]
	if f == nil {
		return
	}
	defer m.tidyLocked(key, f)
	for i, s := range f.shares {
		if s.owner == o {
			f.shares = append(f.shares[:i], f.shares[i+1:]...)
			m.hosts[o.Host].shares--
			m.tidyHostLocked(o.Host)
			return
		}
	}
}
