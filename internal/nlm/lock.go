package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// lock is LOCK: take the lock, or say why not; a request that may block and conflicts
// is BLOCKED, and a GRANTED call follows once it is had.
func (s *Server) lock(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeLockArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	s.doLock(s.newRequest(call, a.Lock.CallerName), a, lockMonitored).Encode(&reply.Writer)
	return nil
}

// How a lock request came.
type lockKind int

const (
	lockMonitored   lockKind = iota // LOCK: the client is monitored
	lockAsync                       // LOCK_MSG: monitored, its grant announced by GRANTED_MSG
	lockUnmonitored                 // NM_LOCK: not monitored, never blocks
)

var lockProcNames = [...]string{"LOCK", "LOCK_MSG", "NM_LOCK"}

func (s *Server) doLock(r *request, a LockArgs, kind lockKind) Res {
	res := Res{Cookie: a.Cookie}
	if kind == lockUnmonitored {
		a.Block = false
	}
	key, ok := s.file(r, a.Lock.FH)
	if !ok {
		res.Stat = stat(StatStaleFH, r.vers)
		s.logCall(lockProcNames[kind], r, a.Lock, a.Exclusive, res.Stat)
		return res
	}
	if err := s.touch(r, kind != lockUnmonitored, a.State); err != nil {
		s.logger.Warn("lock refused: the client cannot be monitored", "client", r.peer.Addr.String(), "err", err)
		res.Stat = StatDeniedNoLocks
		return res
	}
	req := locks.Request{File: key, Owner: r.owner(a.Lock.SVID, a.Lock.OH), Exclusive: a.Exclusive,
		Range: span(a.Lock), Block: a.Block, Reclaim: a.Reclaim}
	if a.Block {
		req.Payload = &waitInfo{peer: r.peer, netid: r.netid, vers: r.vers, async: kind == lockAsync,
			exclusive: a.Exclusive, lock: copyLock(a.Lock)}
	}
	st, _ := s.locks.Lock(req)
	if st == locks.Granted {
		// A GRANTED call still under way for this lock must not undo it if the client,
		// now holding it by this answer, refuses the call.
		s.settle(grantKey{file: key, owner: req.Owner, exclusive: req.Exclusive, r: req.Range}, nil)
	}
	res.Stat = stat(statusOf(st), r.vers)
	s.logCall(lockProcNames[kind], r, a.Lock, a.Exclusive, res.Stat, "block", a.Block, "reclaim", a.Reclaim)
	return res
}
