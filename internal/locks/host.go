package locks

import "slices"

// host counts what one client host has in the table, for the bounds.
type host struct {
	locks, waiters, shares int
}

// hostLocked returns the host's entry, made if absent and the bound on hosts allows; mu
// held. Pair it with tidyHostLocked once the request is done.
func (m *Manager) hostLocked(name string) (*host, bool) {
	h := m.hosts[name]
	if h != nil {
		return h, true
	}
	if len(m.hosts) >= m.cfg.MaxHosts {
		return nil, false
	}
	h = &host{}
	m.hosts[name] = h
	return h, true
}

// tidyHostLocked drops a host's entry once it has nothing in the table; mu held.
func (m *Manager) tidyHostLocked(name string) {
	if h := m.hosts[name]; h != nil && h.locks == 0 && h.waiters == 0 && h.shares == 0 {
		delete(m.hosts, name)
	}
}

// Active reports whether a host holds, waits for or shares anything.
func (m *Manager) Active(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.hosts[name]
	return ok
}

// Hosts lists the hosts that hold, wait for or share anything, sorted.
func (m *Manager) Hosts() []string {
	m.mu.Lock()
	out := make([]string, 0, len(m.hosts))
	for name := range m.hosts {
		out = append(out, name)
	}
	m.mu.Unlock()
	slices.Sort(out)
	return out
}

// DropHosts removes everything the hosts match accepts hold, wait for or share (they
// rebooted, or asked to be forgotten), and grants the waiters of other hosts that this
// lets through. It returns the hosts dropped and the grants.
func (m *Manager) DropHosts(match func(host string) bool) ([]string, []Grant) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var dropped []string
	for name := range m.hosts {
		if match(name) {
			dropped = append(dropped, name)
		}
	}
	if len(dropped) == 0 {
		return nil, nil
	}
	slices.Sort(dropped)
	gone := func(h string) bool { _, ok := slices.BinarySearch(dropped, h); return ok }
	for _, h := range dropped {
		delete(m.hosts, h)
	}
	var grants []Grant
	keys := make([]string, 0, len(m.files))
	for key := range m.files {
		keys = append(keys, key)
	}
	slices.Sort(keys) // grants in a stable order
	for _, key := range keys {
		f := m.files[key]
		released := false
		f.held = slices.DeleteFunc(f.held, func(l Lock) bool {
			if gone(l.Owner.Host) {
				m.locks--
				released = true
				return true
			}
			return false
		})
		f.waiters = slices.DeleteFunc(f.waiters, func(w *waiter) bool { return gone(w.owner.Host) })
		f.shares = slices.DeleteFunc(f.shares, func(s share) bool { return gone(s.owner.Host) })
		if released {
			grants = append(grants, m.grantLocked(key, f)...)
		}
		m.tidyLocked(key, f)
	}
	return dropped, grants
}
