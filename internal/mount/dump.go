package mount

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// dump lists the mounts MNT entered (mountlist).
func (s *Server) dump(_ context.Context, _ *oncrpc.Call, reply *oncrpc.Reply) error {
	for _, e := range s.mounts.list() {
		reply.Bool(true) // value follows
		reply.String(e.host)
		reply.String(e.dir)
	}
	reply.Bool(false)
	return nil
}
