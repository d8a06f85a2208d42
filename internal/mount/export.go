package mount

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// Export is one entry of the EXPORT list: a path clients mount and the client groups
// allowed (as the exports file writes them: "*", an address, a network).
type Export struct {
	Dir    string
	Groups []string
}

// export lists every export with its groups, as mountd does, whoever asks.
func (s *Server) export(_ context.Context, _ *oncrpc.Call, reply *oncrpc.Reply) error {
	for _, e := range s.exports() {
		reply.Bool(true) // an export follows
		reply.String(e.Dir)
		for _, g := range e.Groups {
			reply.Bool(true) // a group follows
			reply.String(g)
		}
		reply.Bool(false) // no more groups
	}
	reply.Bool(false) // no more exports
	return nil
}
