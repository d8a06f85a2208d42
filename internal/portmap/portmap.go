package portmap

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// The program and its versions: PMAP v2 (RFC 1833 section 3), rpcbind v3 and v4
// (section 2).
const (
	ProgramNumber = 100000
	VersionPMAP   = 2
	VersionRPCB3  = 3
	VersionRPCB4  = 4
	// Port is where clients look for the portmapper.
	Port = 111
)

// The PMAP v2 protocol numbers.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Proc is a procedure number; the three versions share the numbers below 6.
type Proc uint32

// The procedures offered. CALLIT/BCAST and INDIRECT (which would make the server call
// other services for anyone), UADDR2TADDR, TADDR2UADDR, GETADDRLIST and GETSTAT are not:
// they answer PROC_UNAVAIL.
const (
	ProcNull        Proc = 0
	ProcSet         Proc = 1
	ProcUnset       Proc = 2
	ProcGetport     Proc = 3 // PMAP v2 GETPORT; GETADDR in v3 and v4
	ProcGetaddr     Proc = 3
	ProcDump        Proc = 4
	ProcGettime     Proc = 6 // v3 and v4
	ProcGetversaddr Proc = 9 // v4
)

// Service is one program version answered at one address: a line of what the
// portmapper lists.
type Service struct {
	Program, Version uint32
	Netid            string         // tcp, udp, tcp6 or udp6
	Addr             netip.AddrPort // an unspecified address: every address of the host
}

func (s Service) String() string {
	return fmt.Sprintf("%d v%d %s %s", s.Program, s.Version, s.Netid, FormatUaddr(s.Addr))
}

// ServicesAt lists a program version at a listener's or socket's address: tcp or udp for
// IPv4, tcp6 or udp6 for IPv6, and both for an IPv6 wildcard (a socket that also takes
// IPv4).
func ServicesAt(program, version uint32, addr net.Addr) ([]Service, error) {
	var ap netip.AddrPort
	var v4, v6 string
	switch a := addr.(type) {
	case *net.TCPAddr:
		ap, v4, v6 = a.AddrPort(), NetidTCP, NetidTCP6
	case *net.UDPAddr:
		ap, v4, v6 = a.AddrPort(), NetidUDP, NetidUDP6
	default:
		return nil, fmt.Errorf("portmap: %v is neither a TCP nor a UDP address", addr)
	}
	ip := ap.Addr()
	switch {
	case ip.Is4() || ip.Is4In6():
		return []Service{{program, version, v4, netip.AddrPortFrom(ip.Unmap(), ap.Port())}}, nil
	case ip.IsUnspecified():
		return []Service{
			{program, version, v4, netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port())},
			{program, version, v6, ap},
		}, nil
	}
	return []Service{{program, version, v6, ap}}, nil
}

// Self lists the portmapper's own versions at its addresses.
func Self(addrs ...net.Addr) ([]Service, error) {
	var out []Service
	for _, a := range addrs {
		for _, v := range []uint32{VersionRPCB4, VersionRPCB3, VersionPMAP} {
			s, err := ServicesAt(ProgramNumber, v, a)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
	}
	return out, nil
}

// Config is what the portmapper lists.
type Config struct {
	// Services are the programs this process answers, its own portmapper included (see
	// Self): listed always, in this order, never removed by UNSET nor replaced by SET.
	Services []Service
	Logger   *slog.Logger
}

// Server answers the portmapper's three versions.
type Server struct {
	table  *registry
	logger *slog.Logger
}

// New builds the portmapper; it refuses a service of a netid it does not know or
// listed twice.
func New(cfg Config) (*Server, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	table := newRegistry()
	for _, s := range cfg.Services {
		if !knownNetid(s.Netid) {
			return nil, fmt.Errorf("portmap: service %v: unknown netid", s)
		}
		if !table.add(mapping{prog: s.Program, vers: s.Version, netid: s.Netid,
			uaddr: FormatUaddr(s.Addr), owner: ownOwner, fixed: true}) {
			return nil, fmt.Errorf("portmap: service %v listed twice", s)
		}
	}
	return &Server{table: table, logger: logger}, nil
}

// ownOwner is the owner the DUMP of versions 3 and 4 shows for this process's services.
const ownOwner = "ovlnfs"

// Programs are the portmapper's dispatch tables, one per version.
func (s *Server) Programs() []oncrpc.Program {
	null := func(context.Context, *oncrpc.Call, *oncrpc.Reply) error { return nil }
	type entry struct {
		proc Proc
		name string
		fn   oncrpc.Handler
	}
	build := func(name string, version uint32, table []entry) oncrpc.Program {
		n := 0
		for _, e := range table {
			n = max(n, int(e.proc)+1)
		}
		procs := make([]oncrpc.Procedure, n)
		for _, e := range table {
			procs[e.proc] = oncrpc.Procedure{Name: e.name, Handle: e.fn}
		}
		return oncrpc.Program{Name: name, Number: ProgramNumber, Version: version, Procedures: procs}
	}
	rpcb := func(version uint32) []entry {
		t := []entry{
			{ProcNull, "NULL", null},
			{ProcSet, "SET", s.rpcbSet},
			{ProcUnset, "UNSET", s.rpcbUnset},
			{ProcGetaddr, "GETADDR", s.getaddr},
			{ProcDump, "DUMP", s.rpcbDump},
			{ProcGettime, "GETTIME", s.gettime},
		}
		if version == VersionRPCB4 {
			t = append(t, entry{ProcGetversaddr, "GETVERSADDR", s.getversaddr})
		}
		return t
	}
	return []oncrpc.Program{
		build("PMAP2", VersionPMAP, []entry{
			{ProcNull, "NULL", null},
			{ProcSet, "SET", s.pmapSet},
			{ProcUnset, "UNSET", s.pmapUnset},
			{ProcGetport, "GETPORT", s.getport},
			{ProcDump, "DUMP", s.pmapDump},
		}),
		build("RPCB3", VersionRPCB3, rpcb(VersionRPCB3)),
		build("RPCB4", VersionRPCB4, rpcb(VersionRPCB4)),
	}
}
