package nlm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// This server is no NLM client: nothing here waits for a lock, so a GRANTED call is
// answered denied, and a GRANTED_MSG dropped (checked, with an empty reply).

func (s *Server) granted(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	a, err := DecodeTestArgs(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	Res{Cookie: a.Cookie, Stat: StatDenied}.Encode(&reply.Writer)
	return nil
}

func (s *Server) grantedMsg(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	if _, err := DecodeTestArgs(call.Args, call.Vers); err != nil {
		return oncrpc.ErrGarbageArgs
	}
	return nil
}

// grantedRes is GRANTED_RES: a client's answer to a GRANTED_MSG this server sent,
// matched by its cookie. An answer nobody waits for is dropped.
func (s *Server) grantedRes(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	a, err := DecodeRes(call.Args, call.Vers)
	if err != nil {
		return oncrpc.ErrGarbageArgs
	}
	s.mu.Lock()
	ch := s.awaiting[string(a.Cookie)]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- a.Stat:
		default:
		}
	}
	return nil
}

// encodeRes is a Res in a buffer of its own, the arguments of a _RES message.
func encodeRes(r Res) []byte {
	var w xdr.Writer
	r.Encode(&w)
	return w.Buf
}
