package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// The asynchronous forms: each is answered with an empty reply at once, and its results
// go back to the client's lock manager as a call of their own (TEST_RES, LOCK_RES,
// CANCEL_RES, UNLOCK_RES), with the call's cookie. Arguments that do not decode are
// GARBAGE_ARGS, and no _RES follows.

func (s *Server) testMsg(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	a, err := DecodeTestArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	r := s.newRequest(call, a.Lock.CallerName)
	res := s.doTest(r, a)
	var w xdr.Writer // encoded now, while the cookie's memory is the call's
	res.Encode(&w, call.Vers)
	s.sendRes(r, ProcTestRes, w.Buf)
	return nil
}

func (s *Server) lockMsg(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	a, err := DecodeLockArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	r := s.newRequest(call, a.Lock.CallerName)
	s.sendRes(r, ProcLockRes, encodeRes(s.doLock(r, a, lockAsync)))
	return nil
}

func (s *Server) cancelMsg(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	a, err := DecodeCancelArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	r := s.newRequest(call, a.Lock.CallerName)
	s.sendRes(r, ProcCancelRes, encodeRes(s.doCancel(r, a)))
	return nil
}

func (s *Server) unlockMsg(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	a, err := DecodeUnlockArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	r := s.newRequest(call, a.Lock.CallerName)
	s.sendRes(r, ProcUnlockRes, encodeRes(s.doUnlock(r, a)))
	return nil
}
