package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// nmLock is NM_LOCK (versions 3 and 4): LOCK for a client that is not monitored (it
// will not tell of its reboots, nor be told of this server's), which never blocks.
func (s *Server) nmLock(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeLockArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	s.doLock(s.newRequest(call, a.Lock.CallerName), a, lockUnmonitored).Encode(&reply.Writer)
	return nil
}
