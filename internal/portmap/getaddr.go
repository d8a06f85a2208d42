package portmap

import (
	"context"
	"net/netip"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// getaddr is rpcbind GETADDR: the universal address of a program version on a netid (the
// one named, else the one the call came on), or of another version of the program when
// that one is not there, as rpcbind answers; "" when the program is not there.
func (s *Server) getaddr(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	return s.lookupAddr(call, reply, true)
}

// getversaddr is rpcbind v4 GETVERSADDR: GETADDR of exactly the version asked for.
func (s *Server) getversaddr(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	return s.lookupAddr(call, reply, false)
}

func (s *Server) lookupAddr(call *oncrpc.Call, reply *oncrpc.Reply, anyVersion bool) error {
	b, err := decodeRPCB(call.Args)
	if err != nil {
		return err
	}
	netid := b.netid
	if netid == "" {
		netid = transportNetid(call)
	}
	uaddr := ""
	if m, ok := s.table.find(b.prog, b.vers, netid, anyVersion); ok {
		uaddr = merged(m, call)
	}
	reply.String(uaddr)
	return nil
}

// merged is a mapping's address as the caller can reach it: a mapping of every address
// of the host (a wildcard listener) answers with the address the call itself reached,
// when it is of the mapping's family.
func merged(m mapping, call *oncrpc.Call) string {
	ap, err := ParseUaddr(m.netid, m.uaddr)
	if err != nil || !ap.Addr().IsUnspecified() {
		return m.uaddr
	}
	local, ok := addrPortOf(call.LocalAddr)
	if !ok {
		return m.uaddr
	}
	ip := local.Addr().Unmap()
	if ip.IsUnspecified() || ip.Is4() != ap.Addr().Is4() {
		return m.uaddr
	}
	return FormatUaddr(netip.AddrPortFrom(ip, ap.Port()))
}
