package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// share is SHARE (versions 3 and 4): reserve a file in a DOS share mode, the access
// wanted (fsh_access) and the access denied to others (fsh_mode). Never blocks.
func (s *Server) share(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeShareArgs(call.Args)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	r := s.newRequest(call, a.Share.CallerName)
	res := ShareRes{Cookie: a.Cookie}
	key, ok := s.file(r, a.Share.FH)
	switch {
	case !ok:
		res.Stat = stat(StatStaleFH, r.vers)
	case s.touch(r, true, 0) != nil:
		res.Stat = StatDeniedNoLocks
	default:
		// fsh_access and fsh_mode use locks' bits: 1 read, 2 write.
		res.Stat = statusOf(s.locks.Share(key, r.owner(0, a.Share.OH), uint8(a.Share.Access), uint8(a.Share.Mode), a.Reclaim))
	}
	res.Encode(&reply.Writer)
	s.logger.Debug("nlm", "proc", "SHARE", "vers", r.vers, "client", r.peer.Addr.String(), "caller", r.peer.Name,
		"access", a.Share.Access, "deny", a.Share.Mode, "reclaim", a.Reclaim, "status", statName(res.Stat))
	return nil
}
