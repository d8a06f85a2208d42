package portmap

import (
	"context"
	"net/netip"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// registeredOwner is the owner of a mapping SET made: the caller is root (localRoot).
const registeredOwner = "superuser"

// pmapSet is PMAP v2 SET: map a program version on TCP or UDP to a port of every address
// of the host. The reply is whether the mapping is in place.
func (s *Server) pmapSet(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	m, err := decodeMapping(call.Args)
	if err != nil {
		return err
	}
	if err := s.mayChange(call, "PMAP2.SET"); err != nil {
		return err
	}
	netid := netidOf(m.prot)
	ok := netid != "" && m.port != 0 && m.port <= 0xffff
	if ok {
		uaddr := FormatUaddr(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(m.port)))
		ok = s.table.set(mapping{prog: m.prog, vers: m.vers, netid: netid, uaddr: uaddr, owner: registeredOwner})
	}
	s.logger.Info("portmapper SET", "prog", m.prog, "vers", m.vers, "prot", m.prot, "port", m.port, "ok", ok)
	reply.Bool(ok)
	return nil
}

// rpcbSet is rpcbind SET: map a program version on a netid to a universal address. The
// owner is the caller's (root), whatever the arguments say.
func (s *Server) rpcbSet(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	b, err := decodeRPCB(call.Args)
	if err != nil {
		return err
	}
	if err := s.mayChange(call, "RPCB.SET"); err != nil {
		return err
	}
	ap, perr := ParseUaddr(b.netid, b.addr)
	ok := perr == nil && ap.Port() != 0
	if ok {
		ok = s.table.set(mapping{prog: b.prog, vers: b.vers, netid: b.netid, uaddr: FormatUaddr(ap), owner: registeredOwner})
	}
	s.logger.Info("portmapper SET", "prog", b.prog, "vers", b.vers, "netid", b.netid, "addr", b.addr, "ok", ok)
	reply.Bool(ok)
	return nil
}
