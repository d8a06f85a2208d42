package mount

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// umnt removes a mount from the DUMP list.
func (s *Server) umnt(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	dir := call.Args.OpaqueMax(maxPathLen, errPathTooLong)
	if call.Args.Err() != nil {
		return oncrpc.ErrGarbageArgs
	}
	s.mounts.remove(call.Client, string(dir))
	return nil
}
