package server_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// lockingServer is a whole server with the lock manager on 127.0.0.1.
type lockingServer struct {
	srv      *server.Server
	nfs      string // NFS and MOUNT over TCP
	nlmTCP   string
	nlmUDP   string
	shutdown func()
}

func startLockingServer(t *testing.T, cfg server.Config) *lockingServer {
	t.Helper()
	cfg.NLM = true
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	npc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(l) })
	wg.Go(func() { _ = srv.ServeLocks(nl) })
	wg.Go(func() { _ = srv.ServeLocksUDP(npc) })
	srv.NotifyRestart()
	s := &lockingServer{srv: srv, nfs: l.Addr().String(), nlmTCP: nl.Addr().String(), nlmUDP: npc.LocalAddr().String()}
	once := sync.Once{}
	s.shutdown = func() {
		once.Do(func() {
			l.Close()
			nl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Error(err)
			}
			npc.Close()
			wg.Wait()
			if err := srv.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(s.shutdown)
	return s
}

// statusMonitorStub is a client host's status monitor, found through its portmapper:
// what SM_NOTIFY it was sent.
func statusMonitorStub(t *testing.T) (pmPort uint16, notices <-chan string) {
	t.Helper()
	ch := make(chan string, 8)
	procs := make([]oncrpc.Procedure, nsm.ProcNotify+1)
	procs[nsm.ProcNotify] = oncrpc.Procedure{Name: "NOTIFY", Handle: func(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
		ch <- string(call.Args.Opaque())
		return nil
	}}
	rpc, err := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{{Name: "SM", Number: nsm.ProgramNumber, Version: 1, Procedures: procs}}})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	services, err := portmap.ServicesAt(nsm.ProgramNumber, 1, pc.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	pm, err := server.NewPortmapper(server.PortmapperConfig{Services: services, TCP: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}})
	if err != nil {
		t.Fatal(err)
	}
	pmpc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = rpc.ServeUDP(pc) })
	wg.Go(func() { _ = pm.ServeUDP(pmpc) })
	t.Cleanup(func() {
		_ = rpc.Shutdown(context.Background())
		_ = pm.Shutdown(context.Background())
		pc.Close()
		pmpc.Close()
		wg.Wait()
	})
	return uint16(pmpc.LocalAddr().(*net.UDPAddr).Port), ch
}

// TestLockManagerAssembled: the assembled server's lock manager names a file by its
// object, not its handle (a lock through one hard link's handle is in the way of one
// through the other's); the client that locked is in WORKDIR/ovlnfs-nsm; after a
// restart it is sent SM_NOTIFY, the grace period takes only reclaims, and the reclaimed
// lock is held after it.
func TestLockManagerAssembled(t *testing.T) {
	root := t.TempDir()
	dirs := map[string]string{}
	for _, d := range []string{"lower", "upper", "work"} {
		dirs[d] = filepath.Join(root, d)
		if err := os.MkdirAll(dirs[d], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dirs["lower"], "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dirs["lower"], "f"), filepath.Join(dirs["lower"], "g")); err != nil {
		t.Fatal(err)
	}
	pmPort, notices := statusMonitorStub(t)
	cfg := server.Config{Exports: []server.Export{{Path: "/", Lowers: []string{dirs["lower"]}, Upper: dirs["upper"], Work: dirs["work"],
		Clients: clients.Everyone(false)}}, Grace: 1500 * time.Millisecond, PeerPortmapPort: pmPort}
	s := startLockingServer(t, cfg)
	if d, n := s.srv.Grace(); d != 0 || n != 0 {
		t.Fatalf("grace at the first start: %v, %d clients", d, n)
	}
	nfs := rpctest.Dial(t, s.nfs)
	rootFH := nfs.MountRoot()
	fhF, fhG := nfs.Lookup(rootFH, "f"), nfs.Lookup(rootFH, "g")
	if bytes.Equal(fhF, fhG) {
		t.Fatal("the two links have one handle: the test shows nothing")
	}
	a := &rpctest.NLMClient{Addr: s.nlmTCP, Netid: "tcp", Vers: 4, Name: "client-a"}
	b := &rpctest.NLMClient{Addr: s.nlmUDP, Netid: "udp", Vers: 4, Name: "client-b"}
	if st, err := a.Lock(nlm.LockArgs{Exclusive: true, Lock: a.LockOf(fhF, 7, 0, 0), State: 1}); err != nil || st != nlm.StatGranted {
		t.Fatalf("LOCK: %d %v", st, err)
	}
	res, err := b.Test(false, b.LockOf(fhG, 8, 100, 1))
	if err != nil || res.Stat != nlm.StatDenied || res.Holder.SVID != 7 {
		t.Fatalf("TEST through the other link: %+v %v", res, err)
	}
	if st, _ := b.Lock(nlm.LockArgs{Lock: b.LockOf(fhG, 8, 0, 0)}); st != nlm.StatDenied {
		t.Fatalf("LOCK through the other link: %d", st)
	}
	if st, _ := a.Lock(nlm.LockArgs{Lock: a.LockOf([]byte("not a handle"), 7, 0, 0)}); st != nlm.StatStaleFH {
		t.Fatalf("LOCK of no handle: %d", st)
	}
	peers, _ := os.ReadDir(filepath.Join(dirs["work"], server.LockStateDir, "peers"))
	if len(peers) != 2 { // a, and b, which asked (and was denied)
		t.Fatalf("peers in the workdir: %v", peers)
	}
	s.shutdown()

	s = startLockingServer(t, cfg)
	if d, n := s.srv.Grace(); d != cfg.Grace || n != 2 {
		t.Fatalf("grace after the restart: %v, %d clients", d, n)
	}
	for range 2 {
		select {
		case name := <-notices:
			if name != "127.0.0.1" {
				t.Errorf("SM_NOTIFY mon_name %q", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the clients were not told of the restart")
		}
	}
	a.Addr, b.Addr = s.nlmTCP, s.nlmUDP
	if st, _ := b.Lock(nlm.LockArgs{Lock: b.LockOf(fhG, 8, 0, 0)}); st != nlm.StatDeniedGrace {
		t.Fatalf("a new lock in the grace period: %d", st)
	}
	if st, _ := a.Lock(nlm.LockArgs{Exclusive: true, Reclaim: true, Lock: a.LockOf(fhG, 7, 0, 0)}); st != nlm.StatGranted {
		t.Fatalf("a reclaim in the grace period: %d", st)
	}
	time.Sleep(cfg.Grace)
	res, err = b.Test(false, b.LockOf(fhF, 8, 0, 0))
	if err != nil || res.Stat != nlm.StatDenied || res.Holder.SVID != 7 || !res.Holder.Exclusive {
		t.Fatalf("TEST after the grace period: %+v %v", res, err)
	}
}

// TestLockServices: what the portmapper lists for the lock manager; a server built
// without it serves no locks.
func TestLockServices(t *testing.T) {
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4045}
	udp := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4046}
	got, err := server.LockServices(tcp, udp)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range got {
		lines = append(lines, s.String())
	}
	want := []string{
		"100021 v4 tcp 127.0.0.1.15.205", "100021 v3 tcp 127.0.0.1.15.205", "100021 v1 tcp 127.0.0.1.15.205", "100024 v1 tcp 127.0.0.1.15.205",
		"100021 v4 udp 127.0.0.1.15.206", "100021 v3 udp 127.0.0.1.15.206", "100021 v1 udp 127.0.0.1.15.206", "100024 v1 udp 127.0.0.1.15.206",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("LockServices:\n%v\nwant\n%v", lines, want)
	}
	srv, err := server.New(server.Config{Exports: []server.Export{{Path: "/", Lowers: []string{t.TempDir()}, Clients: clients.Everyone(false)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := srv.ServeLocks(l); err == nil {
		t.Error("ServeLocks without the lock manager")
	}
}
