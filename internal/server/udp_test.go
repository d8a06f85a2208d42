package server_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/server"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// udpServer is a whole server on 127.0.0.1: NFS and MOUNT over TCP, MOUNT over UDP on the
// same port, and a portmapper listing them.
type udpServer struct {
	tcp, udp net.Addr
	pmTCP    net.Addr
	pmUDP    net.Addr
	srv      *server.Server
	services []portmap.Service
}

func startUDPServer(t *testing.T) *udpServer {
	t.Helper()
	root := t.TempDir()
	lower := filepath.Join(root, "lower")
	if err := os.MkdirAll(filepath.Join(lower, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Exports: []server.Export{{Path: "/", Lowers: []string{lower}, Clients: clients.Everyone(false)}}})
	if err != nil {
		t.Fatal(err)
	}
	// A port free for TCP and UDP both.
	var l net.Listener
	var pc *net.UDPConn
	for try := 0; pc == nil; try++ {
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: l.Addr().(*net.TCPAddr).Port})
		if err != nil {
			l.Close()
			if try == 20 {
				t.Fatal(err)
			}
		}
	}
	services, err := server.Services(l.Addr(), pc.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	pml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pmpc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pm, err := server.NewPortmapper(server.PortmapperConfig{Services: services, TCP: pml.Addr(), UDP: pmpc.LocalAddr()})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	go func() { errs <- srv.Serve(l) }()
	go func() { errs <- srv.ServeUDP(pc) }()
	go func() { errs <- pm.Serve(pml) }()
	go func() { errs <- pm.ServeUDP(pmpc) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		l.Close()
		pml.Close()
		if err := errors.Join(srv.Shutdown(ctx), pm.Shutdown(ctx)); err != nil {
			t.Error(err)
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		pc.Close()
		pmpc.Close()
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return &udpServer{tcp: l.Addr(), udp: pc.LocalAddr(), pmTCP: pml.Addr(), pmUDP: pmpc.LocalAddr(), srv: srv, services: services}
}

func udpCall(t *testing.T, to net.Addr, prog, vers, proc uint32, args []byte) (*xdr.Reader, error) {
	t.Helper()
	c, err := net.DialUDP("udp", nil, to.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := oncrpc.Invoke(ctx, c, prog, vers, proc, args)
	return xdr.NewReader(res, 0), err
}

// TestMountOverUDP: MOUNT answers over UDP on the NFS port (EXPORT, MNT with the same
// root handle as over TCP, DUMP sharing its list with TCP's, UMNT); NFS itself does not.
func TestMountOverUDP(t *testing.T) {
	s := startUDPServer(t)
	r, err := udpCall(t, s.udp, mount.ProgramNumber, mount.Version, uint32(mount.ProcExport), nil)
	if err != nil || !r.Bool() || string(r.Opaque()) != "/" {
		t.Fatalf("EXPORT over UDP: %v", err)
	}
	r, err = udpCall(t, s.udp, mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), rpctest.Opaque([]byte("/")))
	if err != nil || r.Uint32() != 0 {
		t.Fatalf("MNT over UDP: %v", err)
	}
	udpHandle := r.Opaque()
	tcp := rpctest.Dial(t, s.tcp.String())
	if tcpHandle := tcp.MountRoot(); !reflect.DeepEqual(tcpHandle, udpHandle) || r.Err() != nil {
		t.Errorf("root handle over UDP %x, over TCP %x", udpHandle, tcpHandle)
	}
	if got := tcp.Dump(); !reflect.DeepEqual(got, []string{"127.0.0.1:/"}) {
		t.Errorf("DUMP after MNT over UDP and TCP: %q", got)
	}
	if _, err := udpCall(t, s.udp, mount.ProgramNumber, mount.Version, uint32(mount.ProcUmnt), rpctest.Opaque([]byte("/"))); err != nil {
		t.Fatal(err)
	}
	if got := tcp.Dump(); len(got) != 0 {
		t.Errorf("DUMP after UMNT over UDP: %q", got)
	}
	_, err = udpCall(t, s.udp, mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), []byte{0, 0, 4, 1})
	var re *oncrpc.ReplyError
	if !errors.As(err, &re) || re.Outcome != "GARBAGE_ARGS" {
		t.Errorf("MNT with a 1025-byte claim over UDP: %v", err)
	}
	_, err = udpCall(t, s.udp, nfs3.ProgramNumber, nfs3.Version, 0, nil)
	if !errors.As(err, &re) || re.Outcome != "PROG_UNAVAIL" {
		t.Errorf("NFS NULL over UDP: %v, want PROG_UNAVAIL", err)
	}
	// And the file handle from UDP's MNT works over TCP.
	rpctest.Accepted(t, tcp.Call(nfs3.ProgramNumber, nfs3.Version, uint32(nfs3.ProcGetattr), rpctest.Opaque(udpHandle)), oncrpc.Success)
}

// TestPortmapperListsTheServer: the assembled portmapper tells where NFS and MOUNT are.
func TestPortmapperListsTheServer(t *testing.T) {
	s := startUDPServer(t)
	port := uint32(s.tcp.(*net.TCPAddr).Port)
	for _, c := range []struct {
		prog, vers, prot, want uint32
	}{
		{nfs3.ProgramNumber, 3, portmap.ProtoTCP, port},
		{nfs3.ProgramNumber, 3, portmap.ProtoUDP, 0},
		{mount.ProgramNumber, 3, portmap.ProtoTCP, port},
		{mount.ProgramNumber, 3, portmap.ProtoUDP, port},
		{portmap.ProgramNumber, 2, portmap.ProtoUDP, uint32(s.pmUDP.(*net.UDPAddr).Port)},
	} {
		var w xdr.Writer
		for _, v := range []uint32{c.prog, c.vers, c.prot, 0} {
			w.Uint32(v)
		}
		r, err := udpCall(t, s.pmUDP, portmap.ProgramNumber, portmap.VersionPMAP, uint32(portmap.ProcGetport), w.Buf)
		if got := r.Uint32(); err != nil || got != c.want {
			t.Errorf("GETPORT %d v%d prot %d = %d (%v), want %d", c.prog, c.vers, c.prot, got, err, c.want)
		}
	}
	want := []portmap.Service{
		{Program: nfs3.ProgramNumber, Version: 3, Netid: "tcp", Addr: s.tcp.(*net.TCPAddr).AddrPort()},
		{Program: mount.ProgramNumber, Version: 3, Netid: "tcp", Addr: s.tcp.(*net.TCPAddr).AddrPort()},
		{Program: mount.ProgramNumber, Version: 3, Netid: "udp", Addr: s.udp.(*net.UDPAddr).AddrPort()},
	}
	if !reflect.DeepEqual(s.services, want) {
		t.Errorf("Services = %v, want %v", s.services, want)
	}
	without, _ := server.Services(s.tcp, nil)
	if !reflect.DeepEqual(without, want[:2]) {
		t.Errorf("Services without UDP = %v", without)
	}
}
