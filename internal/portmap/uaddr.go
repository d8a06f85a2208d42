package portmap

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Universal addresses (RFC 1833 section 2, RFC 5665 section 5.2.3): an IPv4 address in
// dotted form, or an IPv6 address in its text form, followed by the port as two more
// decimal octets, high first: 127.0.0.1.8.1 and ::1.8.1 are port 2049.

// Netids of the transports the portmapper knows.
const (
	NetidTCP  = "tcp"
	NetidUDP  = "udp"
	NetidTCP6 = "tcp6"
	NetidUDP6 = "udp6"
)

// FormatUaddr is addr's universal address.
func FormatUaddr(addr netip.AddrPort) string {
	p := addr.Port()
	return fmt.Sprintf("%s.%d.%d", addr.Addr().Unmap(), p>>8, p&0xff)
}

var errBadUaddr = errors.New("portmap: not a universal address")

// ParseUaddr reads a universal address of netid's family: IPv4 for tcp and udp, IPv6 for
// tcp6 and udp6.
func ParseUaddr(netid, uaddr string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(uaddr, '.')
	if i < 0 {
		return netip.AddrPort{}, errBadUaddr
	}
	j := strings.LastIndexByte(uaddr[:i], '.')
	if j < 0 {
		return netip.AddrPort{}, errBadUaddr
	}
	hi, ok1 := octet(uaddr[j+1 : i])
	lo, ok2 := octet(uaddr[i+1:])
	if !ok1 || !ok2 {
		return netip.AddrPort{}, errBadUaddr
	}
	ip, err := netip.ParseAddr(uaddr[:j])
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, errBadUaddr
	}
	switch netid {
	case NetidTCP, NetidUDP:
		if !ip.Is4() {
			return netip.AddrPort{}, errBadUaddr
		}
	case NetidTCP6, NetidUDP6:
		if !ip.Is6() {
			return netip.AddrPort{}, errBadUaddr
		}
	default:
		return netip.AddrPort{}, fmt.Errorf("portmap: unknown netid %q", netid)
	}
	return netip.AddrPortFrom(ip, uint16(hi)<<8|uint16(lo)), nil
}

// octet reads a decimal number from 0 to 255, digits only.
func octet(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= 255
}

// protocolOf is the PMAP v2 protocol number of a netid, 0 for one v2 cannot name.
func protocolOf(netid string) uint32 {
	switch netid {
	case NetidTCP:
		return ProtoTCP
	case NetidUDP:
		return ProtoUDP
	}
	return 0
}

// netidOf is the netid of a PMAP v2 protocol number ("" for another).
func netidOf(proto uint32) string {
	switch proto {
	case ProtoTCP:
		return NetidTCP
	case ProtoUDP:
		return NetidUDP
	}
	return ""
}

// knownNetid reports whether netid is one the portmapper maps.
func knownNetid(netid string) bool {
	switch netid {
	case NetidTCP, NetidUDP, NetidTCP6, NetidUDP6:
		return true
	}
	return false
}
