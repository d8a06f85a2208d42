package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// cancelProc is CANCEL: the client no longer waits for a blocked lock. If the lock was
// granted meanwhile and its GRANTED call is still under way, the grant is undone.
func (s *Server) cancelProc(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeCancelArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	s.doCancel(s.newRequest(call, a.Lock.CallerName), a).Encode(&reply.Writer)
	return nil
}

func (s *Server) doCancel(r *request, a CancelArgs) Res {
	res := Res{Cookie: a.Cookie}
	key, ok := s.file(r, a.Lock.FH)
	if !ok {
		res.Stat = stat(StatStaleFH, r.vers)
		s.logCall("CANCEL", r, a.Lock, a.Exclusive, res.Stat)
		return res
	}
	o := r.owner(a.Lock.SVID, a.Lock.OH)
	if !s.locks.Cancel(key, o, a.Exclusive, span(a.Lock)) {
		if d := s.settle(grantKey{file: key, owner: o, exclusive: a.Exclusive, r: span(a.Lock)}, nil); d != nil {
			s.release(d)
		}
	}
	res.Stat = StatGranted
	s.logCall("CANCEL", r, a.Lock, a.Exclusive, res.Stat)
	return res
}
