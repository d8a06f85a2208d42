package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// test is TEST: would the lock be granted? If not, the lock in the way.
func (s *Server) test(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeTestArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	res := s.doTest(s.newRequest(call, a.Lock.CallerName), a)
	res.Encode(&reply.Writer, call.Vers)
	return nil
}

func (s *Server) doTest(r *request, a TestArgs) TestRes {
	res := TestRes{Cookie: a.Cookie}
	key, ok := s.file(r, a.Lock.FH)
	if !ok {
		res.Stat = stat(StatStaleFH, r.vers)
		s.logCall("TEST", r, a.Lock, a.Exclusive, res.Stat)
		return res
	}
	st, l := s.locks.Test(key, r.owner(a.Lock.SVID, a.Lock.OH), a.Exclusive, span(a.Lock))
	res.Stat = stat(statusOf(st), r.vers)
	if st == locks.Denied {
		res.Holder = Holder{Exclusive: l.Exclusive, SVID: l.Owner.SVID, OH: []byte(l.Owner.OH),
			Offset: l.Range.Start, Length: l.Range.Length()}
	}
	s.logCall("TEST", r, a.Lock, a.Exclusive, res.Stat)
	return res
}
