package nlm

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// request is what every procedure works out first: who the client is, and how to reach
// it again.
type request struct {
	vers  uint32
	peer  nsm.Peer // the client's address and caller name, and the address of ours it used
	netid string   // "tcp" or "udp": the transport the call came on, and its callbacks go on
}

func (s *Server) newRequest(call *oncrpc.Call, callerName []byte) *request {
	r := &request{vers: call.Vers, netid: "tcp"}
	r.peer.Name = string(callerName)
	switch a := call.RemoteAddr.(type) {
	case *net.TCPAddr:
		r.peer.Addr = a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		r.peer.Addr = a.AddrPort().Addr().Unmap()
		r.netid = "udp"
	}
	switch a := call.LocalAddr.(type) {
	case *net.TCPAddr:
		r.peer.Server = a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		r.peer.Server = a.AddrPort().Addr().Unmap()
	}
	if !r.peer.Server.IsValid() {
		r.peer.Server = netip.IPv4Unspecified()
	}
	if !r.peer.Addr.IsValid() {
		r.peer.Addr = netip.IPv4Unspecified()
	}
	return r
}

// host is the lock table's name for the client.
func (r *request) host() string { return r.peer.Key() }

// owner is the lock owner of an svid and oh of this client.
func (r *request) owner(svid int32, oh []byte) locks.Owner {
	return locks.Owner{Host: r.host(), SVID: svid, OH: string(oh)}
}

// file names the file of a handle; false for a handle that names none, or one of an
// export whose rules do not admit the client.
func (s *Server) file(r *request, fh []byte) (string, bool) {
	key, err := s.cfg.Key(fh, r.peer.Addr)
	return key, err == nil
}

// span is the byte range of a lock's offset and length.
func span(l Lock) locks.Range { return locks.Span(l.Offset, l.Length) }

// copyLock is l with its own memory: the call's record is recycled once answered.
func copyLock(l Lock) Lock {
	return Lock{CallerName: bytes.Clone(l.CallerName), FH: bytes.Clone(l.FH), OH: bytes.Clone(l.OH),
		SVID: l.SVID, Offset: l.Offset, Length: l.Length}
}

var statNames = [...]string{"granted", "denied", "denied_nolocks", "blocked", "denied_grace_period",
	"deadlock", "rofs", "stale_fh", "fbig", "failed"}

// statName is a status's name, for logs.
func statName(s uint32) string {
	if int(s) < len(statNames) {
		return statNames[s]
	}
	return "?"
}

// logCall writes one debug line for a lock call.
func (s *Server) logCall(proc string, r *request, l Lock, exclusive bool, st uint32, extra ...any) {
	s.logger.Debug("nlm", append([]any{"proc", proc, "vers", r.vers, "client", r.peer.Addr.String(), "caller", r.peer.Name,
		"svid", l.SVID, "exclusive", exclusive, "offset", l.Offset, "length", l.Length, "status", statName(st)}, extra...)...)
}
