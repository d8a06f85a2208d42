package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// freeAll is FREE_ALL (versions 3 and 4): a client (by its caller name, from its
// address) drops everything it holds, as after a reboot. The reply is empty.
func (s *Server) freeAll(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	a, err := DecodeNotify(call.Args)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	r := s.newRequest(call, a.Name)
	key := r.host()
	s.mu.Lock()
	_, known := s.hosts[key]
	s.mu.Unlock()
	s.logger.Debug("nlm", "proc", "FREE_ALL", "vers", r.vers, "client", r.peer.Addr.String(), "caller", r.peer.Name, "known", known)
	s.drop(map[string]bool{key: true}, "FREE_ALL")
	return nil
}
