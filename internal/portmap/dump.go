package portmap

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// pmapDump is PMAP v2 DUMP: every mapping on TCP or UDP (`rpcinfo -p`).
func (s *Server) pmapDump(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	if err := noArgs(call.Args); err != nil {
		return err
	}
	for _, m := range s.table.list() {
		prot := protocolOf(m.netid)
		ap, err := ParseUaddr(m.netid, m.uaddr)
		if prot == 0 || err != nil {
			continue
		}
		reply.Bool(true) // a mapping follows
		pmapMapping{prog: m.prog, vers: m.vers, prot: prot, port: uint32(ap.Port())}.encode(&reply.Writer)
	}
	reply.Bool(false)
	return nil
}

// rpcbDump is rpcbind DUMP: every mapping, with its netid, address and owner.
func (s *Server) rpcbDump(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	if err := noArgs(call.Args); err != nil {
		return err
	}
	for _, m := range s.table.list() {
		reply.Bool(true)
		rpcb{prog: m.prog, vers: m.vers, netid: m.netid, addr: m.uaddr, owner: m.owner}.encode(&reply.Writer)
	}
	reply.Bool(false)
	return nil
}
