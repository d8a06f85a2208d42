package portmap

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// testServices is what the tests' portmapper lists besides itself: NFS and MOUNT the way
// ovlnfs registers them, and a wildcard listener of another program on IPv4 and IPv6.
var testServices = []Service{
	{100003, 3, NetidTCP, ap("127.0.0.1:2049")},
	{100005, 3, NetidTCP, ap("127.0.0.1:2049")},
	{100005, 3, NetidUDP, ap("127.0.0.1:2049")},
	{100021, 4, NetidTCP, ap("0.0.0.0:4045")},
	{100021, 4, NetidTCP6, ap("[::]:4045")},
}

// served is a portmapper answering on 127.0.0.1 over TCP and UDP (ephemeral ports).
type served struct {
	pm       *Server
	tcp, udp net.Addr
}

func startServed(t *testing.T, services []Service) *served {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	self, err := Self(l.Addr(), pc.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	pm, err := New(Config{Services: append(self, services...)})
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := oncrpc.New(oncrpc.Config{Programs: pm.Programs()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = rpc.Serve(l) }()
	udpDone := make(chan struct{})
	go func() { defer close(udpDone); _ = rpc.ServeUDP(pc) }()
	t.Cleanup(func() {
		l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rpc.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-udpDone
		pc.Close()
	})
	return &served{pm: pm, tcp: l.Addr(), udp: pc.LocalAddr()}
}

// clients are connections to the portmapper over TCP and over UDP.
func (s *served) clients(t *testing.T) map[string]net.Conn {
	t.Helper()
	tcp, err := net.Dial("tcp", s.tcp.String())
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.DialUDP("udp", nil, s.udp.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close(); udp.Close() })
	return map[string]net.Conn{"tcp": tcp, "udp": udp}
}

func invoke(t *testing.T, c net.Conn, vers uint32, proc Proc, args []byte) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return oncrpc.Invoke(ctx, c, ProgramNumber, vers, uint32(proc), args)
}

func mustInvoke(t *testing.T, c net.Conn, vers uint32, proc Proc, args []byte) *xdr.Reader {
	t.Helper()
	res, err := invoke(t, c, vers, proc, args)
	if err != nil {
		t.Fatalf("v%d proc %d: %v", vers, proc, err)
	}
	return xdr.NewReader(res, 0)
}

func mappingArgs(prog, vers, prot, port uint32) []byte {
	var w xdr.Writer
	pmapMapping{prog, vers, prot, port}.encode(&w)
	return w.Buf
}

func rpcbArgs(prog, vers uint32, netid, addr string) []byte {
	var w xdr.Writer
	rpcb{prog: prog, vers: vers, netid: netid, addr: addr, owner: "test"}.encode(&w)
	return w.Buf
}

func TestUaddr(t *testing.T) {
	for _, c := range []struct {
		netid, uaddr string
		want         netip.AddrPort
	}{
		{NetidTCP, "127.0.0.1.8.1", ap("127.0.0.1:2049")},
		{NetidUDP, "0.0.0.0.0.111", ap("0.0.0.0:111")},
		{NetidTCP6, "::1.8.1", ap("[::1]:2049")},
		{NetidUDP6, "fe80::1.255.255", ap("[fe80::1]:65535")},
		{NetidTCP6, "::ffff:10.0.0.1.0.1", netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.1"), 1)},
	} {
		got, err := ParseUaddr(c.netid, c.uaddr)
		if err != nil || got != c.want {
			t.Errorf("ParseUaddr(%s, %q) = %v, %v; want %v", c.netid, c.uaddr, got, err, c.want)
		}
	}
	if got := FormatUaddr(ap("127.0.0.1:2049")); got != "127.0.0.1.8.1" {
		t.Errorf("FormatUaddr = %q", got)
	}
	if got := FormatUaddr(ap("[::]:111")); got != "::.0.111" {
		t.Errorf("FormatUaddr = %q", got)
	}
	for _, bad := range [][2]string{
		{NetidTCP, "127.0.0.1.8"}, {NetidTCP, "127.0.0.1.8.256"}, {NetidTCP, "127.0.0.1.8.-1"},
		{NetidTCP, "127.0.0.1.8.+1"}, {NetidTCP, "127.0.0.1.0008.1"}, {NetidTCP, "::1.8.1"},
		{NetidTCP6, "127.0.0.1.8.1"}, {NetidTCP6, "fe80::1%eth0.8.1"}, {"local", "/run/x.8.1"},
		{NetidUDP, ""}, {NetidUDP, ".."}, {NetidUDP, "1.2.3.4..1"},
	} {
		if got, err := ParseUaddr(bad[0], bad[1]); err == nil {
			t.Errorf("ParseUaddr(%s, %q) = %v, want an error", bad[0], bad[1], got)
		}
	}
}

// TestLookups: GETPORT, GETADDR, GETVERSADDR, DUMP and GETTIME over TCP and UDP.
func TestLookups(t *testing.T) {
	s := startServed(t, testServices)
	pmPort := uint32(s.tcp.(*net.TCPAddr).Port)
	for name, c := range s.clients(t) {
		t.Run(name, func(t *testing.T) {
			for _, g := range []struct {
				prog, vers, prot, want uint32
			}{
				{100003, 3, ProtoTCP, 2049},
				{100003, 3, ProtoUDP, 0},    // NFS is not served over UDP
				{100003, 2, ProtoTCP, 2049}, // another version: the client learns from PROG_MISMATCH
				{100005, 3, ProtoUDP, 2049},
				{100021, 4, ProtoTCP, 4045},
				{ProgramNumber, 2, ProtoTCP, pmPort},
				{12345, 1, ProtoTCP, 0},
				{100003, 3, 99, 0},
			} {
				r := mustInvoke(t, c, VersionPMAP, ProcGetport, mappingArgs(g.prog, g.vers, g.prot, 0))
				if got := r.Uint32(); got != g.want || r.Err() != nil || r.Remaining() != 0 {
					t.Errorf("GETPORT %d v%d prot %d = %d, want %d", g.prog, g.vers, g.prot, got, g.want)
				}
			}
			transport := NetidTCP
			if name == "udp" {
				transport = NetidUDP
			}
			for _, vers := range []uint32{VersionRPCB3, VersionRPCB4} {
				for _, g := range []struct {
					proc       Proc
					prog, ver  uint32
					netid      string
					want       string
					skipUnless string // the transport the lookup (empty netid) needs
				}{
					{ProcGetaddr, 100003, 3, NetidTCP, "127.0.0.1.8.1", ""},
					{ProcGetaddr, 100003, 3, NetidUDP, "", ""},
					{ProcGetaddr, 100003, 2, NetidTCP, "127.0.0.1.8.1", ""},
					{ProcGetaddr, 100005, 3, "", "127.0.0.1.8.1", ""},
					{ProcGetaddr, 100003, 3, "", "127.0.0.1.8.1", NetidTCP},
					{ProcGetaddr, 100003, 3, "", "", NetidUDP},
					// A wildcard listener answers with the address the call reached.
					{ProcGetaddr, 100021, 4, NetidTCP, "127.0.0.1.15.205", ""},
					{ProcGetaddr, 100021, 4, NetidTCP6, "::.15.205", ""},
					{ProcGetaddr, 99999, 1, NetidTCP, "", ""},
				} {
					if g.skipUnless != "" && g.skipUnless != transport {
						continue
					}
					r := mustInvoke(t, c, vers, g.proc, rpcbArgs(g.prog, g.ver, g.netid, ""))
					if got := string(r.Opaque()); got != g.want || r.Err() != nil || r.Remaining() != 0 {
						t.Errorf("v%d GETADDR %d v%d %q = %q, want %q", vers, g.prog, g.ver, g.netid, got, g.want)
					}
				}
			}
			r := mustInvoke(t, c, VersionRPCB4, ProcGetversaddr, rpcbArgs(100003, 2, NetidTCP, ""))
			if got := string(r.Opaque()); got != "" {
				t.Errorf("GETVERSADDR of NFS v2 = %q, want none", got)
			}
			r = mustInvoke(t, c, VersionRPCB4, ProcGetversaddr, rpcbArgs(100003, 3, NetidTCP, ""))
			if got := string(r.Opaque()); got != "127.0.0.1.8.1" {
				t.Errorf("GETVERSADDR of NFS v3 = %q", got)
			}
			r = mustInvoke(t, c, VersionRPCB3, ProcGettime, nil)
			if got := int64(r.Uint32()); got < time.Now().Unix()-5 || got > time.Now().Unix()+5 {
				t.Errorf("GETTIME = %d, now is %d", got, time.Now().Unix())
			}

			var v2 []pmapMapping
			r = mustInvoke(t, c, VersionPMAP, ProcDump, nil)
			for r.Bool() {
				v2 = append(v2, pmapMapping{r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32()})
			}
			udpPort := uint32(s.udp.(*net.UDPAddr).Port)
			want := []pmapMapping{
				{ProgramNumber, 4, ProtoTCP, pmPort}, {ProgramNumber, 3, ProtoTCP, pmPort}, {ProgramNumber, 2, ProtoTCP, pmPort},
				{ProgramNumber, 4, ProtoUDP, udpPort}, {ProgramNumber, 3, ProtoUDP, udpPort}, {ProgramNumber, 2, ProtoUDP, udpPort},
				{100003, 3, ProtoTCP, 2049}, {100005, 3, ProtoTCP, 2049}, {100005, 3, ProtoUDP, 2049}, {100021, 4, ProtoTCP, 4045},
			}
			if r.Err() != nil || !reflect.DeepEqual(v2, want) {
				t.Errorf("PMAP DUMP = %v (%v), want %v", v2, r.Err(), want)
			}
			for _, vers := range []uint32{VersionRPCB3, VersionRPCB4} {
				res, err := invoke(t, c, vers, ProcDump, nil)
				if err != nil {
					t.Fatal(err)
				}
				list, err := decodeDump(res)
				if err != nil || len(list) != 6+len(testServices) {
					t.Fatalf("v%d DUMP: %d entries, %v", vers, len(list), err)
				}
				last := list[len(list)-1]
				if last != (rpcb{100021, 4, NetidTCP6, "::.15.205", ownOwner}) {
					t.Errorf("v%d DUMP ends with %+v", vers, last)
				}
			}
		})
	}
}

// TestBadInput: whatever is wrong with a call is answered with the RPC error that says
// so, over TCP and UDP, and nothing changes.
func TestBadInput(t *testing.T) {
	s := startServed(t, testServices)
	before := s.pm.table.list()
	long := strings.Repeat("x", maxString+1)
	for name, c := range s.clients(t) {
		t.Run(name, func(t *testing.T) {
			expect := func(what string, prog, vers, proc uint32, args []byte, want string) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := oncrpc.Invoke(ctx, c, prog, vers, proc, args)
				var re *oncrpc.ReplyError
				if !errors.As(err, &re) || re.Outcome != want {
					t.Errorf("%s: %v, want %s", what, err, want)
				}
			}
			expect("another program", 100001, 2, 0, nil, "PROG_UNAVAIL")
			expect("version 5", ProgramNumber, 5, 0, nil, "PROG_MISMATCH")
			expect("version 1", ProgramNumber, 1, 3, mappingArgs(100003, 3, ProtoTCP, 0), "PROG_MISMATCH")
			expect("CALLIT", ProgramNumber, 2, 5, nil, "PROC_UNAVAIL")
			expect("BCAST", ProgramNumber, 4, 5, nil, "PROC_UNAVAIL")
			expect("UADDR2TADDR", ProgramNumber, 3, 7, nil, "PROC_UNAVAIL")
			expect("INDIRECT", ProgramNumber, 4, 10, nil, "PROC_UNAVAIL")
			expect("GETADDRLIST", ProgramNumber, 4, 11, nil, "PROC_UNAVAIL")
			expect("GETSTAT", ProgramNumber, 4, 12, nil, "PROC_UNAVAIL")
			expect("GETVERSADDR in v3", ProgramNumber, 3, 9, rpcbArgs(100003, 3, NetidTCP, ""), "PROC_UNAVAIL")
			expect("procedure 99", ProgramNumber, 4, 99, nil, "PROC_UNAVAIL")
			expect("GETPORT short", ProgramNumber, 2, 3, mappingArgs(100003, 3, ProtoTCP, 0)[:12], "GARBAGE_ARGS")
			expect("GETPORT long", ProgramNumber, 2, 3, append(mappingArgs(100003, 3, ProtoTCP, 0), 0, 0, 0, 0), "GARBAGE_ARGS")
			expect("GETPORT none", ProgramNumber, 2, 3, nil, "GARBAGE_ARGS")
			expect("DUMP with arguments", ProgramNumber, 2, 4, []byte{0, 0, 0, 1}, "GARBAGE_ARGS")
			expect("GETADDR netid too long", ProgramNumber, 4, 3, rpcbArgs(100003, 3, long, ""), "GARBAGE_ARGS")
			expect("GETADDR address too long", ProgramNumber, 3, 3, rpcbArgs(100003, 3, NetidTCP, long), "GARBAGE_ARGS")
			expect("GETADDR length past the end", ProgramNumber, 3, 3, append(mappingArgs(100003, 3, 0xffffff, 0)[:12], 0, 0, 0, 0), "GARBAGE_ARGS")
			expect("GETADDR without the owner", ProgramNumber, 4, 3, rpcbArgs(100003, 3, NetidTCP, "")[:20], "GARBAGE_ARGS")
			// The test's ports are not privileged: changes are refused, and so are
			// malformed ones before that.
			expect("PMAP SET", ProgramNumber, 2, 1, mappingArgs(100099, 1, ProtoTCP, 700), "AUTH_ERROR")
			expect("PMAP UNSET", ProgramNumber, 2, 2, mappingArgs(100003, 3, ProtoTCP, 0), "AUTH_ERROR")
			expect("RPCB SET", ProgramNumber, 3, 1, rpcbArgs(100099, 1, NetidTCP, "127.0.0.1.2.188"), "AUTH_ERROR")
			expect("RPCB UNSET", ProgramNumber, 4, 2, rpcbArgs(100005, 3, "", ""), "AUTH_ERROR")
			expect("RPCB SET short", ProgramNumber, 4, 1, rpcbArgs(100099, 1, NetidTCP, "127.0.0.1.2.188")[:30], "GARBAGE_ARGS")
			huge := append(mappingArgs(100003, 3, ProtoTCP, 0), make([]byte, 65504-56)...)
			if name == "tcp" {
				huge = append(huge, make([]byte, 1<<20)...)
			}
			expect("a huge GETPORT", ProgramNumber, 2, 3, huge, "GARBAGE_ARGS")
			r := mustInvoke(t, c, VersionPMAP, ProcNull, nil)
			if r.Remaining() != 0 {
				t.Errorf("NULL answered %d bytes", r.Remaining())
			}
		})
	}
	if after := s.pm.table.list(); !reflect.DeepEqual(after, before) {
		t.Errorf("the list changed:\n%v\n%v", before, after)
	}
}

// call runs one procedure's handler as oncrpc would, from the given remote address.
func call(t *testing.T, s *Server, vers uint32, proc Proc, remote net.Addr, args []byte) (*xdr.Reader, error) {
	t.Helper()
	for _, p := range s.Programs() {
		if p.Version != vers {
			continue
		}
		reply := &oncrpc.Reply{}
		c := &oncrpc.Call{XID: 1, Prog: ProgramNumber, Vers: vers, Proc: uint32(proc), Args: xdr.NewReader(args, 0),
			Record: args, Client: "test", LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 111}, RemoteAddr: remote}
		err := p.Procedures[proc].Handle(context.Background(), c, reply)
		return xdr.NewReader(reply.Buf, 0), err
	}
	t.Fatalf("no version %d", vers)
	return nil, nil
}

func answer(t *testing.T, s *Server, vers uint32, proc Proc, remote net.Addr, args []byte) bool {
	t.Helper()
	r, err := call(t, s, vers, proc, remote, args)
	if err != nil {
		t.Fatalf("v%d proc %d: %v", vers, proc, err)
	}
	ok := r.Bool()
	if r.Err() != nil || r.Remaining() != 0 {
		t.Fatalf("v%d proc %d: reply does not decode", vers, proc)
	}
	return ok
}

// TestSetUnset: root on this host may add and remove mappings, never this process's own;
// others may not change anything; the list is bounded.
func TestSetUnset(t *testing.T) {
	s, err := New(Config{Services: testServices})
	if err != nil {
		t.Fatal(err)
	}
	root := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 700}
	root6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 1023}
	before := s.table.list()
	for name, remote := range map[string]net.Addr{
		"unprivileged port":  &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1024},
		"port 0":             &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0},
		"another host":       &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 700},
		"an unknown address": nil,
	} {
		for _, c := range []struct {
			vers uint32
			proc Proc
			args []byte
		}{
			{2, ProcSet, mappingArgs(100099, 1, ProtoTCP, 700)},
			{2, ProcUnset, mappingArgs(100021, 4, 0, 0)},
			{4, ProcSet, rpcbArgs(100099, 1, NetidTCP, "127.0.0.1.2.188")},
			{3, ProcUnset, rpcbArgs(100005, 3, "", "")},
		} {
			if _, err := call(t, s, c.vers, c.proc, remote, c.args); !errors.Is(err, oncrpc.ErrWeakAuth) {
				t.Errorf("%s: v%d proc %d: %v, want ErrWeakAuth", name, c.vers, c.proc, err)
			}
		}
	}
	if after := s.table.list(); !reflect.DeepEqual(after, before) {
		t.Fatalf("refused changes changed the list")
	}

	if !answer(t, s, 2, ProcSet, root, mappingArgs(100099, 1, ProtoTCP, 700)) {
		t.Error("PMAP SET from root refused")
	}
	if m, ok := s.table.find(100099, 1, NetidTCP, false); !ok || m.uaddr != "0.0.0.0.2.188" || m.owner != registeredOwner {
		t.Errorf("after SET: %+v %v", m, ok)
	}
	if !answer(t, s, 2, ProcSet, root, mappingArgs(100099, 1, ProtoTCP, 700)) {
		t.Error("the same SET again refused")
	}
	if answer(t, s, 2, ProcSet, root, mappingArgs(100099, 1, ProtoTCP, 701)) {
		t.Error("SET to another port over an existing mapping accepted")
	}
	for _, bad := range [][]byte{
		mappingArgs(100099, 2, 99, 700),         // no such protocol
		mappingArgs(100099, 2, ProtoUDP, 0),     // no port
		mappingArgs(100099, 2, ProtoUDP, 70000), // no such port
	} {
		if answer(t, s, 2, ProcSet, root, bad) {
			t.Errorf("SET %x accepted", bad)
		}
	}
	if !answer(t, s, 4, ProcSet, root6, rpcbArgs(100099, 1, NetidUDP6, "::1.2.189")) {
		t.Error("RPCB SET on udp6 from root refused")
	}
	for _, bad := range [][2]string{{NetidTCP6, "127.0.0.1.2.190"}, {"local", "/run/x"}, {NetidTCP, "nonsense"}, {NetidTCP, "127.0.0.1.0.0"}} {
		if answer(t, s, 3, ProcSet, root, rpcbArgs(100098, 1, bad[0], bad[1])) {
			t.Errorf("RPCB SET %q %q accepted", bad[0], bad[1])
		}
	}
	// This process's own mappings stay.
	if answer(t, s, 4, ProcSet, root, rpcbArgs(100003, 3, NetidTCP, "127.0.0.1.8.2")) {
		t.Error("SET replaced NFS's mapping")
	}
	if answer(t, s, 2, ProcUnset, root, mappingArgs(100005, 3, 0, 0)) || answer(t, s, 3, ProcUnset, root, rpcbArgs(100003, 3, "", "")) {
		t.Error("UNSET of this process's own mapping answered TRUE")
	}
	for _, own := range testServices {
		if m, ok := s.table.find(own.Program, own.Version, own.Netid, false); !ok || m.uaddr != FormatUaddr(own.Addr) {
			t.Errorf("%v: now %+v %v", own, m, ok)
		}
	}
	if !answer(t, s, 4, ProcUnset, root, rpcbArgs(100099, 1, NetidUDP6, "")) {
		t.Error("RPCB UNSET refused")
	}
	if _, ok := s.table.find(100099, 1, NetidUDP6, false); ok {
		t.Error("udp6 mapping still there")
	}
	if _, ok := s.table.find(100099, 1, NetidTCP, false); !ok {
		t.Error("UNSET of udp6 removed the tcp mapping")
	}
	if !answer(t, s, 2, ProcUnset, root, mappingArgs(100099, 1, 0, 0)) {
		t.Error("PMAP UNSET refused")
	}
	if after := s.table.list(); !reflect.DeepEqual(after, before) {
		t.Errorf("after SET and UNSET: %v", after)
	}

	// Bounded: maxRegistered mappings, then FALSE until one goes.
	for i := range maxRegistered {
		if !answer(t, s, 2, ProcSet, root, mappingArgs(200000+uint32(i), 1, ProtoUDP, 800)) {
			t.Fatalf("SET %d refused", i)
		}
	}
	if answer(t, s, 2, ProcSet, root, mappingArgs(300000, 1, ProtoUDP, 800)) {
		t.Error("a SET past the bound accepted")
	}
	if !answer(t, s, 3, ProcUnset, root, rpcbArgs(200000, 1, "", "")) || !answer(t, s, 2, ProcSet, root, mappingArgs(300000, 1, ProtoUDP, 800)) {
		t.Error("after an UNSET, SET still refused")
	}
	// The whole list fits a UDP datagram.
	r, err := call(t, s, 4, ProcDump, root, nil)
	if err != nil || len(r.Buf) > oncrpc.MaxDatagram-100 {
		t.Errorf("DUMP of a full list: %d bytes, %v", len(r.Buf), err)
	}
	// A Unix socket is rpcbind's way: its callers may change the list.
	unixCall := &oncrpc.Call{}
	unixCall.LocalAddr = &net.UnixAddr{Name: "/run/test.sock", Net: "unix"}
	if !localRoot(unixCall) {
		t.Error("a call on a Unix socket is not local")
	}
}

func TestServicesAt(t *testing.T) {
	got, err := ServicesAt(100003, 3, &net.TCPAddr{IP: net.IPv6zero, Port: 2049})
	want := []Service{{100003, 3, NetidTCP, ap("0.0.0.0:2049")}, {100003, 3, NetidTCP6, ap("[::]:2049")}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("dual-stack wildcard: %v %v", got, err)
	}
	got, _ = ServicesAt(100005, 3, &net.UDPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 2049})
	if !reflect.DeepEqual(got, []Service{{100005, 3, NetidUDP, ap("10.1.2.3:2049")}}) {
		t.Errorf("IPv4: %v", got)
	}
	got, _ = ServicesAt(100005, 3, &net.UDPAddr{IP: net.ParseIP("fd00::1"), Port: 2049})
	if !reflect.DeepEqual(got, []Service{{100005, 3, NetidUDP6, ap("[fd00::1]:2049")}}) {
		t.Errorf("IPv6: %v", got)
	}
	if _, err := ServicesAt(1, 1, &net.UnixAddr{Name: "x"}); err == nil {
		t.Error("a Unix address accepted")
	}
	if _, err := New(Config{Services: []Service{{1, 1, "local", ap("127.0.0.1:1")}}}); err == nil {
		t.Error("an unknown netid accepted")
	}
	if _, err := New(Config{Services: slices.Repeat(testServices[:1], 2)}); err == nil {
		t.Error("a service listed twice accepted")
	}
	if !bytes.Equal([]byte(testServices[0].String()), []byte("100003 v3 tcp 127.0.0.1.8.1")) {
		t.Errorf("String = %q", testServices[0].String())
	}
}
