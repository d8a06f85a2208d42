package portmap

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// getport is PMAP v2 GETPORT: the port of a program version on TCP or UDP, or of another
// version of the program when that one is not there; 0 when the program is not.
func (s *Server) getport(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	m, err := decodeMapping(call.Args)
	if err != nil {
		return err
	}
	port := uint32(0)
	if netid := netidOf(m.prot); netid != "" {
		if found, ok := s.table.find(m.prog, m.vers, netid, true); ok {
			if ap, err := ParseUaddr(found.netid, found.uaddr); err == nil {
				port = uint32(ap.Port())
			}
		}
	}
	reply.Uint32(port)
	return nil
}
