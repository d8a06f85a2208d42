package locks

// Request is a lock an owner asks for on a file.
type Request struct {
	File      string
	Owner     Owner
	Exclusive bool
	Range     Range
	// Block: on a conflict, wait in the queue (Blocked) instead of failing (Denied).
	Block bool
	// Reclaim: the lock was held before the server restarted.
	Reclaim bool
	// Payload goes with the waiter and comes back in its Grant (how to tell the client).
	// A repeated request of a waiter replaces the payload it waits with.
	Payload any
}

// Test reports the first lock that conflicts with the owner locking r (Denied), or
// Granted if none does; during the grace period it is Grace.
func (m *Manager) Test(key string, o Owner, exclusive bool, r Range) (Status, Lock) {
	if m.InGrace() {
		return Grace, Lock{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[key]
	if f == nil {
		return Granted, Lock{}
	}
	if l, ok := conflict(f.held, o, exclusive, r); ok {
		return Denied, l
	}
	return Granted, Lock{}
}

// Lock takes a lock, or queues the request (Blocked) when it conflicts and may block.
// Denied comes with the lock in the way. A request the owner already waits with stays
// one waiter; once it can be had it is granted here and leaves the queue.
func (m *Manager) Lock(req Request) (Status, Lock) {
	if m.graceRefuses(req.Reclaim) {
		return Grace, Lock{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.fileLocked(req.File)
	defer m.tidyLocked(req.File, f)
	if l, ok := conflict(f.held, req.Owner, req.Exclusive, req.Range); ok {
		if !req.Block {
			return Denied, l
		}
		return m.waitLocked(f, req), l
	}
	// Granted: if it was waiting, it waits no more.
	m.dropWaiterLocked(f, req.Owner, req.Exclusive, req.Range)
	if !m.setLocked(f, req.Owner, applyLock(f.held, req.Owner, req.Exclusive, req.Range)) {
		return NoLocks, Lock{}
	}
	return Granted, Lock{}
}

// Unlock releases the owner's locks over r (held or not: unlocking nothing is granted)
// and grants the waiters the release lets through. NoLocks when the cut would split a
// range past the host's bound; nothing changes then.
func (m *Manager) Unlock(key string, o Owner, r Range) (Status, []Grant) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[key]
	if f == nil {
		return Granted, nil
	}
	defer m.tidyLocked(key, f)
	if !m.setLocked(f, o, applyUnlock(f.held, o, r)) {
		return NoLocks, nil
	}
	return Granted, m.grantLocked(key, f)
}

// setLocked replaces f's held locks with next, in which only owner o's differ, if the
// bounds allow it; mu held.
func (m *Manager) setLocked(f *file, o Owner, next []Lock) bool {
	delta := countHost(next, o.Host) - countHost(f.held, o.Host)
	if delta <= 0 {
		f.held = next
		if h := m.hosts[o.Host]; h != nil {
			h.locks += delta
			m.locks += delta
			m.tidyHostLocked(o.Host)
		}
		return true
	}
	h, ok := m.hostLocked(o.Host)
	if !ok || h.locks+delta > m.cfg.MaxLocksPerHost || m.locks+delta > m.cfg.MaxLocks {
		m.tidyHostLocked(o.Host)
		return false
	}
	f.held = next
	h.locks += delta
	m.locks += delta
	return true
}

// grantLocked grants, in arrival order, the waiters on f that no longer conflict; mu
// held. A waiter whose grant would pass a bound keeps waiting.
func (m *Manager) grantLocked(key string, f *file) []Grant {
	var grants []Grant
	for i := 0; i < len(f.waiters); {
		w := f.waiters[i]
		if _, ok := conflict(f.held, w.owner, w.exclusive, w.r); ok {
			i++
			continue
		}
		// The waiter still counts for its host, which therefore stays in the table.
		if !m.setLocked(f, w.owner, applyLock(f.held, w.owner, w.exclusive, w.r)) {
			i++
			continue
		}
		f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
		m.hosts[w.owner.Host].waiters--
		m.tidyHostLocked(w.owner.Host)
		grants = append(grants, Grant{File: key, Lock: Lock{Owner: w.owner, Exclusive: w.exclusive, Range: w.r}, Payload: w.payload})
	}
	return grants
}
