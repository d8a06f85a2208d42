package nlm

import (
	"errors"
	"net/netip"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/nsm"
)

// The clients known: each one that made a request, until it has held nothing for
// Config.IdleUnmonitor. A client is monitored (remembered by the status monitor, on
// disk) before its first monitored lock or share is taken, and forgotten by the janitor
// once idle, so that a restart tells only clients that may hold locks, and a server
// whose clients held nothing has no grace period.

// maxKnownHosts bounds the clients known.
const maxKnownHosts = 8192

var errTooManyHosts = errors.New("nlm: too many clients")

// host is one client.
type host struct {
	peer      nsm.Peer
	seen      time.Time // last request, or last found holding something
	monitored bool
	state     int32 // the client's NSM state, from its last LOCK (0: none seen)
}

// touch records a request of the client, and monitors the client first if monitor is
// set and it is not yet. state is the NSM state the request carried (0: none).
func (s *Server) touch(r *request, monitor bool, state int32) error {
	key := r.host()
	s.mu.Lock()
	h := s.hosts[key]
	if h == nil {
		if len(s.hosts) >= maxKnownHosts {
			s.mu.Unlock()
			return errTooManyHosts
		}
		h = &host{peer: r.peer}
		s.hosts[key] = h
	}
	h.seen = time.Now()
	if state != 0 {
		h.state = state
	}
	need := monitor && !h.monitored
	peer := h.peer
	s.mu.Unlock()
	if !need {
		return nil
	}
	if err := s.mon.Monitor(peer); err != nil {
		return err
	}
	s.mu.Lock()
	if h := s.hosts[key]; h != nil {
		h.monitored = true
	} else {
		s.hosts[key] = &host{peer: peer, seen: time.Now(), monitored: true, state: state}
	}
	s.mu.Unlock()
	return nil
}

// Rebooted drops everything held by the client that sent SM_NOTIFY: the clients at the
// sender's address, or named mon_name (by caller name or address), except one whose
// locks were taken with that very state (they are newer than the reboot).
func (s *Server) Rebooted(sender netip.Addr, monName string, state int32) {
	s.mu.Lock()
	match := make(map[string]bool)
	for key, h := range s.hosts {
		if h.state != 0 && h.state == state {
			continue
		}
		if h.peer.Addr == sender || h.peer.Name == monName || h.peer.Addr.String() == monName {
			match[key] = true
		}
	}
	s.mu.Unlock()
	s.drop(match, "SM_NOTIFY")
}

// drop removes everything the hosts hold, and announces the grants this lets through.
func (s *Server) drop(match map[string]bool, why string) {
	if len(match) == 0 {
		return
	}
	dropped, grants := s.locks.DropHosts(func(h string) bool { return match[h] })
	s.settleHosts(match)
	for _, h := range dropped {
		s.logger.Info("dropped the locks of a client", "client", h, "why", why)
	}
	s.announce(grants)
}

// sweep is the janitor: every tick it forgets the clients idle for Config.IdleUnmonitor.
func (s *Server) sweep() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.janitor.C:
		}
		s.forgetIdle(time.Now())
	}
}

func (s *Server) forgetIdle(now time.Time) {
	s.mu.Lock()
	keys := make([]string, 0, len(s.hosts))
	for key := range s.hosts {
		keys = append(keys, key)
	}
	s.mu.Unlock()
	for _, key := range keys {
		active := s.locks.Active(key)
		s.mu.Lock()
		h := s.hosts[key]
		if h == nil {
			s.mu.Unlock()
			continue
		}
		if active {
			h.seen = now
		}
		idle := !active && now.Sub(h.seen) >= s.cfg.IdleUnmonitor
		if idle {
			delete(s.hosts, key)
		}
		s.mu.Unlock()
		if !idle || !h.monitored {
			continue
		}
		if err := s.mon.Unmonitor(h.peer); err != nil {
			s.logger.Warn("could not forget an idle client", "client", key, "err", err)
		}
		// A lock taken meanwhile keeps it monitored.
		if s.locks.Active(key) {
			r := &request{peer: h.peer}
			if err := s.touch(r, true, h.state); err != nil {
				s.logger.Warn("could not monitor a client again", "client", key, "err", err)
			}
		}
	}
}
