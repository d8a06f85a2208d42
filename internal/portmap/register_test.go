package portmap

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// fakeRpcbind stands in for the system's rpcbind: this package's portmapper on a Unix
// socket (where it takes SET and UNSET, as rpcbind does) and on TCP at 127.0.0.1 (where
// Register reads its work back).
type fakeRpcbind struct {
	socket string
	tcp    netip.AddrPort
	pm     *Server
}

func startFakeRpcbind(t *testing.T) *fakeRpcbind {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "rpcbind.sock")
	ul, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self, err := Self(tl.Addr())
	if err != nil {
		t.Fatal(err)
	}
	pm, err := New(Config{Services: self})
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := oncrpc.New(oncrpc.Config{Programs: pm.Programs()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = rpc.Serve(ul) }()
	go func() { _ = rpc.Serve(tl) }()
	t.Cleanup(func() {
		ul.Close()
		tl.Close()
		_ = rpc.Shutdown(context.Background())
	})
	return &fakeRpcbind{socket: socket, tcp: tl.Addr().(*net.TCPAddr).AddrPort(), pm: pm}
}

// holds reports whether the fake maps s (program, version, netid) to exactly s's address.
func (f *fakeRpcbind) holds(s Service) bool {
	m, ok := f.pm.table.find(s.Program, s.Version, s.Netid, false)
	return ok && m.uaddr == FormatUaddr(s.Addr)
}

// set maps a service as another process would.
func (f *fakeRpcbind) set(t *testing.T, s Service) {
	t.Helper()
	c, err := net.Dial("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, err := rpcbSet(context.Background(), c, s); err != nil || !ok {
		t.Fatalf("SET %v: %v %v", s, ok, err)
	}
}

// liveServer answers NULL of program 100003 version 3 over TCP and UDP at one address.
func liveServer(t *testing.T) netip.AddrPort {
	t.Helper()
	rpc, err := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{{Name: "NFS", Number: 100003, Version: 3,
		Procedures: []oncrpc.Procedure{{Name: "NULL", Handle: func(context.Context, *oncrpc.Call, *oncrpc.Reply) error { return nil }}}}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = rpc.Serve(l) }()
	t.Cleanup(func() { l.Close(); _ = rpc.Shutdown(context.Background()) })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// deadAddr is a port of 127.0.0.1 nothing listens on.
func deadAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestRegister: Register maps every service through the socket, checks them where
// clients ask, and Unregister removes them and nothing else.
func TestRegister(t *testing.T) {
	f := startFakeRpcbind(t)
	nfs := liveServer(t)
	services := []Service{
		{100003, 3, NetidTCP, nfs},
		{100005, 3, NetidTCP, nfs},
		{100005, 3, NetidUDP, nfs},
	}
	other := Service{100024, 1, NetidUDP, ap("127.0.0.1:662")} // statd, say
	f.set(t, other)
	before := len(f.pm.table.list())
	reg, err := Register(ctx(t), RegisterConfig{Services: services, Socket: f.socket, Check: f.tcp})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		if !f.holds(s) {
			t.Errorf("%v not registered", s)
		}
	}
	if got := reg.Services(); !slices.Equal(got, services) {
		t.Errorf("Services() = %v", got)
	}
	if err := reg.Unregister(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.pm.table.list()); n != before || !f.holds(other) {
		t.Errorf("after Unregister: %d mappings (%d before), other kept %v", n, before, f.holds(other))
	}
	if err := reg.Unregister(ctx(t)); err != nil {
		t.Errorf("a second Unregister: %v", err)
	}
}

// TestRegisterTakesOverStale: a mapping left by a server that died (nothing answers
// there) is replaced; Unregister then removes only what still names this process.
func TestRegisterTakesOverStale(t *testing.T) {
	f := startFakeRpcbind(t)
	stale := Service{100003, 3, NetidTCP, deadAddr(t)}
	f.set(t, stale)
	f.set(t, Service{100005, 3, NetidUDP, deadAddr(t)})
	nfs := liveServer(t)
	services := []Service{{100003, 3, NetidTCP, nfs}, {100005, 3, NetidUDP, nfs}}
	reg, err := Register(ctx(t), RegisterConfig{Services: services, Socket: f.socket, Check: f.tcp})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		if !f.holds(s) {
			t.Errorf("%v not registered over the stale mapping", s)
		}
	}
	// Someone else takes over NFS meanwhile: Unregister leaves it.
	c, err := net.Dial("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	newer := Service{100003, 3, NetidTCP, ap("127.0.0.1:3049")}
	if _, err := rpcbUnset(context.Background(), c, newer); err != nil {
		t.Fatal(err)
	}
	c.Close()
	f.set(t, newer)
	if err := reg.Unregister(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if !f.holds(newer) {
		t.Error("Unregister removed another server's mapping")
	}
	if _, ok := f.pm.table.find(100005, 3, NetidUDP, false); ok {
		t.Error("MOUNT over UDP still registered")
	}
}

// TestRegisterTakesOverItsOwnPort: a mapping to a port this process holds (a wildcard
// listener now where a dead server had one address) is taken over, though a call there
// is answered (by this process).
func TestRegisterTakesOverItsOwnPort(t *testing.T) {
	f := startFakeRpcbind(t)
	live := liveServer(t)
	f.set(t, Service{100003, 3, NetidTCP, live})
	ours := Service{100003, 3, NetidTCP, netip.AddrPortFrom(netip.IPv4Unspecified(), live.Port())}
	reg, err := Register(ctx(t), RegisterConfig{Services: []Service{ours}, Socket: f.socket, Check: f.tcp})
	if err != nil {
		t.Fatal(err)
	}
	if !f.holds(ours) {
		t.Error("not registered")
	}
	if err := reg.Unregister(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestRegisterRefusesLiveConflict: a mapping to where a server answers is another
// server's: Register fails, says so, and leaves rpcbind as it was.
func TestRegisterRefusesLiveConflict(t *testing.T) {
	f := startFakeRpcbind(t)
	theirs := Service{100003, 3, NetidTCP, liveServer(t)}
	f.set(t, theirs)
	before := f.pm.table.list()
	ours := deadAddr(t)
	_, err := Register(ctx(t), RegisterConfig{Socket: f.socket, Check: f.tcp, Services: []Service{
		{100005, 3, NetidUDP, ours}, // registered first, then undone
		{100003, 3, NetidTCP, ours},
	}})
	if err == nil || !strings.Contains(err.Error(), "where a server answers") || !strings.Contains(err.Error(), "--portmap=off") {
		t.Fatalf("Register over a live server's mapping: %v", err)
	}
	if after := f.pm.table.list(); !slices.Equal(after, before) {
		t.Errorf("rpcbind changed:\n%v\n%v", before, after)
	}
}

// TestRegisterChecksWhereClientsAsk: a socket whose rpcbind is not the one answering at
// Check (another network namespace's) is found out, and what was set through it undone.
func TestRegisterChecksWhereClientsAsk(t *testing.T) {
	f := startFakeRpcbind(t)
	elsewhere := startFakeRpcbind(t)
	s := Service{100003, 3, NetidTCP, deadAddr(t)}
	_, err := Register(ctx(t), RegisterConfig{Services: []Service{s}, Socket: f.socket, Check: elsewhere.tcp})
	if err == nil || !strings.Contains(err.Error(), "another rpcbind") {
		t.Fatalf("Register with the wrong check address: %v", err)
	}
	if f.holds(s) {
		t.Error("the mapping made through the socket was left behind")
	}
	_, err = Register(ctx(t), RegisterConfig{Services: []Service{s}, Socket: filepath.Join(t.TempDir(), "none.sock")})
	if err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("Register without a socket: %v", err)
	}
}

// TestProbe: a portmapper answers; a closed port and a silent TCP server do not.
func TestProbe(t *testing.T) {
	f := startFakeRpcbind(t)
	if !Probe(ctx(t), f.tcp) {
		t.Error("the portmapper did not answer")
	}
	if Probe(ctx(t), deadAddr(t)) {
		t.Error("a closed port answered")
	}
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if Probe(short, silent.Addr().(*net.TCPAddr).AddrPort()) {
		t.Error("a silent server answered")
	}
	// A server of another program is no portmapper.
	if Probe(ctx(t), liveServer(t)) {
		t.Error("an NFS server passed for a portmapper")
	}
}
