package nlm

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// The calls the server makes to clients' lock managers, each on a goroutine of its own,
// at most Config.MaxCallbacks at a time, none with a lock held: the GRANTED call that
// announces a blocked lock granted, and the _RES message that carries the results of
// a _MSG call. The client's lock manager is found through its portmapper, on the
// transport the request came on, from the address of this server the client used.

// waitInfo is what a blocked request waits with (its locks.Request payload): how to
// tell the client.
type waitInfo struct {
	peer      nsm.Peer
	netid     string
	vers      uint32
	async     bool // LOCK_MSG: announce with GRANTED_MSG, answered by GRANTED_RES
	exclusive bool
	lock      Lock // as the client sent it, copied
}

// grantKey names a granted lock being announced.
type grantKey struct {
	file      string
	owner     locks.Owner
	exclusive bool
	r         locks.Range
}

// delivery is the announcement of one grant.
type delivery struct {
	grant locks.Grant
	info  *waitInfo
}

// announce starts telling the clients of grants. Past Config.MaxPending, a grant is
// released at once (the client, still waiting, asks again in a while).
func (s *Server) announce(grants []locks.Grant) {
	for len(grants) > 0 {
		g := grants[0]
		grants = grants[1:]
		info, ok := g.Payload.(*waitInfo)
		key := grantKey{file: g.File, owner: g.Lock.Owner, exclusive: g.Lock.Exclusive, r: g.Lock.Range}
		d := &delivery{grant: g, info: info}
		if !ok || s.pending.Load() >= int64(s.cfg.MaxPending) || s.ctx.Err() != nil {
			s.logger.Warn("a granted lock cannot be announced now: released", "client", g.Lock.Owner.Host)
			_, more := s.locks.Unlock(g.File, g.Lock.Owner, g.Lock.Range)
			grants = append(grants, more...)
			continue
		}
		s.mu.Lock()
		s.delivers[key] = d
		s.mu.Unlock()
		s.pending.Add(1)
		s.running.Go(func() {
			defer s.pending.Add(-1)
			s.deliver(key, d)
		})
	}
}

// deliver makes the GRANTED calls of one grant until the client answers, or the tries
// run out (the lock is then released), or the grant is settled otherwise.
func (s *Server) deliver(key grantKey, d *delivery) {
	wait := s.cfg.GrantRetry
	var err error
	for attempt := 1; attempt <= s.cfg.GrantAttempts; attempt++ {
		if !s.current(key, d) {
			return
		}
		var st uint32
		st, err = s.callGranted(d)
		switch {
		case err != nil:
			s.logger.Debug("GRANTED call failed", "client", d.info.peer.Addr.String(), "attempt", attempt, "err", err)
		case st == StatGranted:
			s.settle(key, d)
			s.logger.Debug("nlm grant announced", "client", d.info.peer.Addr.String(), "svid", d.info.lock.SVID,
				"offset", d.info.lock.Offset, "length", d.info.lock.Length, "attempt", attempt)
			return
		case st == StatDeniedGrace:
			err = fmt.Errorf("client in its grace period")
		default:
			// The client no longer waits for it.
			s.logger.Debug("nlm grant refused by the client: released", "client", d.info.peer.Addr.String(), "status", statName(st))
			if s.settle(key, d) != nil {
				s.release(d)
			}
			return
		}
		if attempt == s.cfg.GrantAttempts {
			break
		}
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
			return
		}
		wait *= 2
	}
	s.logger.Warn("could not tell a client its blocked lock was granted: released", "client", d.info.peer.Addr.String(),
		"attempts", s.cfg.GrantAttempts, "err", err)
	if s.settle(key, d) != nil {
		s.release(d)
	}
}

// callGranted makes one GRANTED call (or sends GRANTED_MSG and waits for its
// GRANTED_RES) and returns the client's answer.
func (s *Server) callGranted(d *delivery) (uint32, error) {
	select {
	case s.slots <- struct{}{}:
	case <-s.ctx.Done():
		return 0, s.ctx.Err()
	}
	defer func() { <-s.slots }()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
	defer cancel()
	cookie := binary.BigEndian.AppendUint64([]byte("ovlnfs-g"), s.cookies.Add(1))
	l := d.info.lock
	l.CallerName = []byte(s.cfg.Name)
	var args xdr.Writer
	TestArgs{Cookie: cookie, Exclusive: d.info.exclusive, Lock: l}.Encode(&args, d.info.vers)
	conn, err := s.dial(ctx, d.info.peer, d.info.netid, d.info.vers)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if !d.info.async {
		res, err := oncrpc.Invoke(ctx, conn, ProgramNumber, d.info.vers, uint32(ProcGranted), args.Buf)
		if err != nil {
			return 0, err
		}
		r, err := DecodeRes(xdr.NewReader(res, 0), d.info.vers)
		if err != nil {
			return 0, fmt.Errorf("GRANTED reply: %w", err)
		}
		return r.Stat, nil
	}
	answer := make(chan uint32, 1)
	s.mu.Lock()
	s.awaiting[string(cookie)] = answer
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.awaiting, string(cookie))
		s.mu.Unlock()
	}()
	if err := oncrpc.Send(ctx, conn, ProgramNumber, d.info.vers, uint32(ProcGrantedMsg), args.Buf); err != nil {
		return 0, err
	}
	select {
	case st := <-answer:
		return st, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("no GRANTED_RES: %w", ctx.Err())
	}
}

// current reports whether d is still the announcement of its grant.
func (s *Server) current(key grantKey, d *delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delivers[key] == d
}

// settle takes an announcement out of the deliveries: d if it is still the current one,
// or whichever is under way (d nil). It returns what it took (nil: nothing); a delivery
// taken by another is no longer its goroutine's to release.
func (s *Server) settle(key grantKey, d *delivery) *delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.delivers[key]
	if cur == nil || (d != nil && cur != d) {
		return nil
	}
	delete(s.delivers, key)
	return cur
}

// settleOwner takes out the announcements of an owner's grants over a range of a file.
func (s *Server) settleOwner(file string, o locks.Owner, r locks.Range) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.delivers {
		if k.file == file && k.owner == o && k.r.Overlaps(r) {
			delete(s.delivers, k)
		}
	}
}

// settleHosts takes out the announcements to the hosts dropped.
func (s *Server) settleHosts(dropped map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.delivers {
		if dropped[k.owner.Host] {
			delete(s.delivers, k)
		}
	}
}

// release undoes a grant the client did not take, and announces what that lets through.
func (s *Server) release(d *delivery) {
	_, grants := s.locks.Unlock(d.grant.File, d.grant.Lock.Owner, d.grant.Lock.Range)
	s.announce(grants)
}

// sendRes sends a _RES message with the results of a _MSG call. It is sent once: a
// client that gets none sends its _MSG again.
func (s *Server) sendRes(r *request, proc Proc, args []byte) {
	if s.pending.Load() >= int64(s.cfg.MaxPending) || s.ctx.Err() != nil {
		s.logger.Warn("too many calls to clients under way: a _RES message is dropped", "client", r.peer.Addr.String())
		return
	}
	s.pending.Add(1)
	s.running.Go(func() {
		defer s.pending.Add(-1)
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		defer func() { <-s.slots }()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		defer cancel()
		conn, err := s.dial(ctx, r.peer, r.netid, r.vers)
		if err == nil {
			err = oncrpc.Send(ctx, conn, ProgramNumber, r.vers, uint32(proc), args)
			conn.Close()
		}
		if err != nil {
			s.logger.Debug("could not send a _RES message", "client", r.peer.Addr.String(), "proc", proc, "err", err)
		}
	})
}

// dial connects to a client's lock manager.
func (s *Server) dial(ctx context.Context, p nsm.Peer, netid string, vers uint32) (net.Conn, error) {
	local := p.Server
	if local.IsUnspecified() {
		local = netip.Addr{} // let the kernel choose
	}
	return portmap.DialService(ctx, p.Addr, s.cfg.PortmapPort, ProgramNumber, vers, netid, local)
}
