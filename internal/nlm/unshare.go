package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// unshare is UNSHARE: the owner's reservation on the file is withdrawn (having none is
// fine too).
func (s *Server) unshare(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeShareArgs(call.Args)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	r := s.newRequest(call, a.Share.CallerName)
	res := ShareRes{Cookie: a.Cookie}
	if key, ok := s.file(r, a.Share.FH); ok {
		s.locks.Unshare(key, r.owner(0, a.Share.OH))
	} else {
		res.Stat = stat(StatStaleFH, r.vers)
	}
	res.Encode(&reply.Writer)
	s.logger.Debug("nlm", "proc", "UNSHARE", "vers", r.vers, "client", r.peer.Addr.String(), "caller", r.peer.Name, "status", statName(res.Stat))
	return nil
}
