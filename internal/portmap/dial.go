package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Reaching a program on another host through that host's portmapper, for the calls the
// server makes to its clients (NLM's GRANTED callbacks and _RES messages, NSM's reboot
// notices): a PMAP v2 GETPORT over UDP, which every portmapper and rpcbind answers.

// ErrNotRegistered is Lookup's error when the portmapper maps no port for the program.
var ErrNotRegistered = errors.New("portmap: program not registered")

// Lookup asks the portmapper at pm for the port of a program version on a protocol
// (ProtoTCP or ProtoUDP).
func Lookup(ctx context.Context, pm netip.AddrPort, prog, vers, proto uint32) (uint16, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", pm.String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var w xdr.Writer
	pmapMapping{prog: prog, vers: vers, prot: proto}.encode(&w)
	res, err := oncrpc.Invoke(ctx, c, ProgramNumber, VersionPMAP, uint32(ProcGetport), w.Buf)
	if err != nil {
		return 0, err
	}
	r := xdr.NewReader(res, 0)
	port := r.Uint32()
	switch {
	case r.Err() != nil || r.Remaining() != 0 || port > 65535:
		return 0, fmt.Errorf("portmapper at %v: GETPORT reply does not decode", pm)
	case port == 0:
		return 0, fmt.Errorf("portmapper at %v: program %d version %d on %s: %w", pm, prog, vers, netidOf(proto), ErrNotRegistered)
	}
	return uint16(port), nil
}

// DialService connects to a program version on host over network ("tcp" or "udp"), at
// the port host's portmapper (on port pmPort) names for it, from the local address
// local (the zero Addr: any). A UDP connection is a *net.UDPConn, as oncrpc.Invoke wants.
func DialService(ctx context.Context, host netip.Addr, pmPort uint16, prog, vers uint32, network string, local netip.Addr) (net.Conn, error) {
	host = host.Unmap()
	proto := uint32(ProtoTCP)
	if network == "udp" {
		proto = ProtoUDP
	}
	port, err := Lookup(ctx, netip.AddrPortFrom(host, pmPort), prog, vers, proto)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{}
	if local.IsValid() {
		ip := net.IP(local.Unmap().AsSlice())
		if network == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: ip}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	return d.DialContext(ctx, network, net.JoinHostPort(host.String(), strconv.Itoa(int(port))))
}
