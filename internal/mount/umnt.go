package mount

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// umnt removes a mount from the DUMP list.
func (s *Server) umnt(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	dir, err := dirpath(call)
	if err != nil {
		return err
	}
	s.mounts.remove(call.Client, dir)
	return nil
}
