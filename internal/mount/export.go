package mount

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// export lists the one export, with no groups: every client may mount it.
func (s *Server) export(_ context.Context, _ *oncrpc.Call, reply *oncrpc.Reply) error {
	reply.Bool(true) // an export follows
	reply.String(ExportPath)
	reply.Bool(false) // no groups
	reply.Bool(false) // no more exports
	return nil
}
