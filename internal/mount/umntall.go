package mount

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// umntAll removes every mount of the calling host.
func (s *Server) umntAll(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	s.mounts.removeHost(call.Client)
	return nil
}
