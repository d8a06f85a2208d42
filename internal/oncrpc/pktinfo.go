package oncrpc

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A UDP socket bound to a wildcard address learns each datagram's destination address
// from IP_PKTINFO (IPV6_PKTINFO) and sends the reply from it: the kernel would otherwise
// pick the source by route, and a client that sent to another of the host's addresses
// drops a reply from the wrong one.

// pktinfoSpace is room for the one control message asked for.
var pktinfoSpace = unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(unix.SizeofInet4Pktinfo)

func enablePktinfo(pc *net.UDPConn, ipv4 bool) error {
	rc, err := pc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if ipv4 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// parsePktinfo finds a datagram's destination address in its control messages.
func parsePktinfo(oob []byte) (netip.Addr, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, the local address routing chose, the header's
			// destination address.
			return netip.AddrFrom4([4]byte(m.Data[8:12])), true
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo: the destination address, ifindex.
			return netip.AddrFrom16([16]byte(m.Data[:16])), true
		}
	}
	return netip.Addr{}, false
}

// pktinfoFrom is the control message that sends a datagram from src.
func pktinfoFrom(src netip.Addr, ipv4 bool) []byte {
	if ipv4 {
		info := unix.Inet4Pktinfo{Spec_dst: src.Unmap().As4()}
		return unix.PktInfo4(&info)
	}
	info := unix.Inet6Pktinfo{Addr: src.As16()}
	return unix.PktInfo6(&info)
}
