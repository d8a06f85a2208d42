package locks

// waiter is a blocked request in a file's queue.
type waiter struct {
	owner     Owner
	exclusive bool
	r         Range
	payload   any
}

func (w *waiter) is(o Owner, exclusive bool, r Range) bool {
	return w.owner == o && w.exclusive == exclusive && w.r == r
}

// waitLocked queues a request that conflicts with f's locks; mu held. A request already
// waiting keeps its place and takes the new payload.
func (m *Manager) waitLocked(f *file, req Request) Status {
	for _, w := range f.waiters {
		if w.is(req.Owner, req.Exclusive, req.Range) {
			w.payload = req.Payload
			return Blocked
		}
	}
	if m.wouldDeadlockLocked(f, req) {
		return Deadlock
	}
	h, ok := m.hostLocked(req.Owner.Host)
	if !ok || h.waiters >= m.cfg.MaxWaitersPerHost {
		m.tidyHostLocked(req.Owner.Host)
		return NoLocks
	}
	h.waiters++
	f.waiters = append(f.waiters, &waiter{owner: req.Owner, exclusive: req.Exclusive, r: req.Range, payload: req.Payload})
	return Blocked
}

// dropWaiterLocked removes the owner's waiter of that mode and range from f, if there is
// one; mu held.
func (m *Manager) dropWaiterLocked(f *file, o Owner, exclusive bool, r Range) bool {
	for i, w := range f.waiters {
		if w.is(o, exclusive, r) {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			m.hosts[o.Host].waiters--
			m.tidyHostLocked(o.Host)
			return true
		}
	}
	return false
}

// Cancel withdraws a waiting request (the client gave up on it) and reports whether one
// was waiting. A request granted already is not undone: the client refuses its GRANTED
// callback, and the caller then unlocks it.
func (m *Manager) Cancel(key string, o Owner, exclusive bool, r Range) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[key]
	if f == nil {
		return false
	}
	defer m.tidyLocked(key, f)
	return m.dropWaiterLocked(f, o, exclusive, r)
}

// Waiting reports whether the owner waits for that lock on the file.
func (m *Manager) Waiting(key string, o Owner, exclusive bool, r Range) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.files[key]; f != nil {
		for _, w := range f.waiters {
			if w.is(o, exclusive, r) {
				return true
			}
		}
	}
	return false
}

// wouldDeadlockLocked reports whether req, were it to wait, would wait (through owners
// waiting for one another) for itself: one of the owners in its way waits, directly or
// not, for a lock its owner holds; mu held.
func (m *Manager) wouldDeadlockLocked(f *file, req Request) bool {
	// Who each owner waits for: the owners of the locks in the way of its waiters.
	type waiting struct {
		f *file
		w *waiter
	}
	byOwner := make(map[Owner][]waiting)
	for _, g := range m.files {
		for _, w := range g.waiters {
			byOwner[w.owner] = append(byOwner[w.owner], waiting{g, w})
		}
	}
	if len(byOwner) == 0 {
		return false
	}
	blockers := func(g *file, o Owner, exclusive bool, r Range) []Owner {
		var out []Owner
		for _, l := range g.held {
			if conflicts(l, o, exclusive, r) {
				out = append(out, l.Owner)
			}
		}
		return out
	}
	seen := make(map[Owner]bool)
	stack := blockers(f, req.Owner, req.Exclusive, req.Range)
	for len(stack) > 0 {
		o := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if o == req.Owner {
			return true
		}
		if seen[o] {
			continue
		}
		seen[o] = true
		for _, ww := range byOwner[o] {
			stack = append(stack, blockers(ww.f, ww.w.owner, ww.w.exclusive, ww.w.r)...)
		}
	}
	return false
}
