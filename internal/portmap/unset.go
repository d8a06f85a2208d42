package portmap

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// pmapUnset is PMAP v2 UNSET: remove a program version's mappings on TCP and UDP (the
// protocol and port of the arguments are ignored, as RFC 1833 says). This process's own
// mappings stay, and the reply is then false.
func (s *Server) pmapUnset(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	m, err := decodeMapping(call.Args)
	if err != nil {
		return err
	}
	if err := s.mayChange(call, "PMAP2.UNSET"); err != nil {
		return err
	}
	ok := s.table.unset(m.prog, m.vers, NetidTCP, NetidUDP)
	s.logger.Info("portmapper UNSET", "prog", m.prog, "vers", m.vers, "ok", ok)
	reply.Bool(ok)
	return nil
}

// rpcbUnset is rpcbind UNSET: remove a program version's mapping on a netid, or on every
// netid when it is empty; the address is ignored.
func (s *Server) rpcbUnset(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	b, err := decodeRPCB(call.Args)
	if err != nil {
		return err
	}
	if err := s.mayChange(call, "RPCB.UNSET"); err != nil {
		return err
	}
	var ok bool
	if b.netid == "" {
		ok = s.table.unset(b.prog, b.vers)
	} else {
		ok = s.table.unset(b.prog, b.vers, b.netid)
	}
	s.logger.Info("portmapper UNSET", "prog", b.prog, "vers", b.vers, "netid", b.netid, "ok", ok)
	reply.Bool(ok)
	return nil
}
