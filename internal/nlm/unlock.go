package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// unlock is UNLOCK: release the owner's locks over the range (unlocking nothing is
// granted too), and announce the waiters that this lets through.
func (s *Server) unlock(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeUnlockArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	s.doUnlock(s.newRequest(call, a.Lock.CallerName), a).Encode(&reply.Writer)
	return nil
}

func (s *Server) doUnlock(r *request, a UnlockArgs) Res {
	res := Res{Cookie: a.Cookie}
	key, ok := s.file(r, a.Lock.FH)
	if !ok {
		res.Stat = stat(StatStaleFH, r.vers)
		s.logCall("UNLOCK", r, a.Lock, false, res.Stat)
		return res
	}
	o := r.owner(a.Lock.SVID, a.Lock.OH)
	st, grants := s.locks.Unlock(key, o, span(a.Lock))
	// A GRANTED call under way for what was just unlocked has nothing left to undo.
	s.settleOwner(key, o, span(a.Lock))
	s.announce(grants)
	res.Stat = stat(statusOf(st), r.vers)
	s.logCall("UNLOCK", r, a.Lock, false, res.Stat)
	return res
}
