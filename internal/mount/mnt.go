package mount

import (
	"context"
	"encoding/binary"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// mnt answers MNT through the forwarder and enters a successful mount in the DUMP list.
func (s *Server) mnt(ctx context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	dir, err := dirpath(call)
	if err != nil {
		return err
	}
	raw, err := s.forward(ctx, call)
	if err != nil {
		s.logger.Error("MNT not answered", "client", call.Client, "err", err)
		return oncrpc.ErrSystem
	}
	if at, ok := oncrpc.ResultsAt(raw); ok && at+4 <= len(raw) && binary.BigEndian.Uint32(raw[at:]) == mountStatOK {
		s.mounts.add(call.Client, dir)
	}
	reply.Raw = raw
	return nil
}
