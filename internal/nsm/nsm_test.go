package nsm

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

func peer(addr, name string) Peer {
	return Peer{Addr: netip.MustParseAddr(addr), Name: name, Server: netip.MustParseAddr("10.0.0.1")}
}

// TestStore: peers are on disk when Monitor returns and read back by the next run, with
// an odd state number that grows across runs (even once stopped); a forgotten peer is
// gone from disk; a torn write (a .tmp file), a foreign file and a file under another
// name are ignored; names with any bytes survive.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if m.State() != 1 || len(m.Previous()) != 0 {
		t.Fatalf("first run: state %d, previous %v", m.State(), m.Previous())
	}
	odd := peer("10.0.0.2", "name with spaces\nand \"quotes\" \x00")
	v6 := peer("fd00::2", "v6")
	gone := peer("10.0.0.3", "gone")
	for _, p := range []Peer{odd, v6, gone, odd} {
		if err := m.Monitor(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Unmonitor(gone); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(filepath.Join(dir, peersDir))
	if len(files) != 2 {
		t.Fatalf("%d peer files", len(files))
	}
	// Left behind by a crash and by hand.
	os.WriteFile(filepath.Join(dir, peersDir, "abc"+tmpSuffix), []byte("torn"), 0o600)
	os.WriteFile(filepath.Join(dir, peersDir, "junk"), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(dir, peersDir, "renamed"), formatPeer(gone), 0o600)
	// A crash: no Close.
	m2, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if m2.State() != 3 {
		t.Fatalf("after a crash: state %d, want 3", m2.State())
	}
	got := m2.Previous()
	slices.SortFunc(got, func(a, b Peer) int { return strings.Compare(a.Key(), b.Key()) })
	if want := []Peer{odd, v6}; !slices.Equal(got, want) {
		t.Fatalf("previous %+v, want %+v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, peersDir, "abc"+tmpSuffix)); !os.IsNotExist(err) {
		t.Error("a torn write is left")
	}
	if len(m2.Peers()) != 2 {
		t.Errorf("the previous run's peers are monitored until forgotten: %v", m2.Peers())
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, stateFile))
	if string(b) != "4\n" {
		t.Fatalf("state after a stop: %q", b)
	}
	m3, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if m3.State() != 5 {
		t.Fatalf("after a stop: state %d, want 5", m3.State())
	}
	m3.Close()
}

func TestBounds(t *testing.T) {
	m, err := New(Config{Dir: t.TempDir(), MaxPeers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Monitor(peer("10.0.0.2", "a")) != nil || m.Monitor(peer("10.0.0.3", "b")) != nil {
		t.Fatal("within the bound")
	}
	if err := m.Monitor(peer("10.0.0.4", "c")); err != ErrTooManyPeers {
		t.Fatalf("past the bound: %v", err)
	}
	if err := m.Monitor(peer("10.0.0.2", "a")); err != nil {
		t.Fatalf("a known peer past the bound: %v", err)
	}
	// In memory only.
	mm, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if mm.Monitor(peer("10.0.0.2", "a")) != nil || len(mm.Peers()) != 1 || mm.Close() != nil {
		t.Fatal("in memory")
	}
}

func TestBadStateFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stateFile), []byte("many\n"), 0o600)
	if _, err := New(Config{Dir: dir}); err == nil {
		t.Fatal("a state file that holds no number was taken")
	}
}

// TestOwnNoticeIgnored: a peer at the server's own address whose portmapper names this
// very monitor gets the restart notice here; it is not taken for a reboot of anyone's,
// while a notice of another state is.
func TestOwnNoticeIgnored(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Monitor(Peer{Addr: netip.MustParseAddr("127.0.0.1"), Name: "local", Server: netip.MustParseAddr("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	m.Close()

	rebooted := make(chan int32, 4)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	services, _ := portmap.ServicesAt(ProgramNumber, Version, pc.LocalAddr())
	pm, err := portmap.New(portmap.Config{Services: services})
	if err != nil {
		t.Fatal(err)
	}
	pmRPC, _ := oncrpc.New(oncrpc.Config{Programs: pm.Programs()})
	pmConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	m, err = New(Config{Dir: dir, PortmapPort: uint16(pmConn.LocalAddr().(*net.UDPAddr).Port),
		Rebooted: func(_ netip.Addr, _ string, state int32) { rebooted <- state }})
	if err != nil {
		t.Fatal(err)
	}
	rpc, _ := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{m.Program()}})
	var wg sync.WaitGroup
	wg.Go(func() { _ = rpc.ServeUDP(pc) })
	wg.Go(func() { _ = pmRPC.ServeUDP(pmConn) })
	defer func() {
		_ = rpc.Shutdown(context.Background())
		_ = pmRPC.Shutdown(context.Background())
		pc.Close()
		pmConn.Close()
		wg.Wait()
		m.Close()
	}()
	m.NotifyRestart()
	m.running.Wait() // the notice went out and was answered
	select {
	case st := <-rebooted:
		t.Fatalf("this server's own notice taken for a reboot (state %d)", st)
	case <-time.After(100 * time.Millisecond):
	}
	// A real notice from a host of that name, with its own state.
	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var w xdr.Writer
	statChange{monName: []byte("127.0.0.1"), state: 77}.encode(&w)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := oncrpc.Invoke(ctx, c, ProgramNumber, Version, uint32(ProcNotify), w.Buf); err != nil {
		t.Fatal(err)
	}
	if st := <-rebooted; st != 77 {
		t.Fatalf("state %d", st)
	}
}
