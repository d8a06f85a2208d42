package portmap

import (
	"net"
	"net/netip"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// Who may change the list. rpcbind takes SET and UNSET only through its Unix socket
// (which tells it the caller's uid); ovlnfs serves its portmapper on no such socket, so it
// takes them from what only root on this host can send: a loopback address and a
// privileged source port (below 1024), as portmap and rpcbind -L did. (Served on a Unix
// socket, as the tests do to stand in for rpcbind, it takes them from any caller there,
// as rpcbind does.) Anything else is denied with AUTH_ERROR (AUTH_TOOWEAK), as rpcbind
// denies it, and changes nothing. The kernel drops packets from a loopback source
// arriving on another interface, so a remote host cannot pass for a local one.

// privilegedPorts is IPPORT_RESERVED.
const privilegedPorts = 1024

// localRoot reports whether a call comes from a privileged port of this host.
func localRoot(call *oncrpc.Call) bool {
	if _, unix := call.LocalAddr.(*net.UnixAddr); unix {
		return true
	}
	ap, ok := addrPortOf(call.RemoteAddr)
	return ok && ap.Addr().Unmap().IsLoopback() && ap.Port() < privilegedPorts && ap.Port() != 0
}

// mayChange admits a SET or UNSET, or says why not.
func (s *Server) mayChange(call *oncrpc.Call, what string) error {
	if localRoot(call) {
		return nil
	}
	s.logger.Warn("portmapper change refused: not from a privileged port of this host",
		"client", call.Client, "remote", addrString(call.RemoteAddr), "proc", what)
	return oncrpc.ErrWeakAuth
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort(), true
	case *net.UDPAddr:
		return a.AddrPort(), true
	}
	return netip.AddrPort{}, false
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// transportNetid is the netid of the transport a call came on ("" if unknown).
func transportNetid(call *oncrpc.Call) string {
	ap, _ := addrPortOf(call.LocalAddr)
	v6 := ap.Addr().Is6() && !ap.Addr().Is4In6()
	switch call.LocalAddr.(type) {
	case *net.TCPAddr:
		if v6 {
			return NetidTCP6
		}
		return NetidTCP
	case *net.UDPAddr:
		if v6 {
			return NetidUDP6
		}
		return NetidUDP
	}
	return ""
}
