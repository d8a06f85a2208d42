package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// This server sends no TEST_MSG, LOCK_MSG, CANCEL_MSG or UNLOCK_MSG, so the _RES
// messages that answer them are checked and dropped, with an empty reply.

func (s *Server) testRes(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	if _, err := DecodeTestRes(call.Args, call.Vers); err != nil {
		return oncrpc.ErrGarbageArgs
	}
	return nil
}

// res takes LOCK_RES, CANCEL_RES and UNLOCK_RES.
func (s *Server) res(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	if _, err := DecodeRes(call.Args, call.Vers); err != nil {
		return oncrpc.ErrGarbageArgs
	}
	return nil
}
