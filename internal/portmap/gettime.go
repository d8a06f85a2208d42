package portmap

import (
	"context"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// gettime is rpcbind GETTIME: the host's time in seconds since 1970.
func (s *Server) gettime(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	if err := noArgs(call.Args); err != nil {
		return err
	}
	reply.Uint32(uint32(time.Now().Unix()))
	return nil
}
