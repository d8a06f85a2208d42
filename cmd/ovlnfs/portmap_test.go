package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// syncBuffer is the server's stderr, read by the test while the server writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is an in-process `ovlnfs serve` with JSON logs.
type running struct {
	started map[string]any // the fields of the "ovlnfs started" line
	log     *syncBuffer
	stop    func() int // cancels and returns the exit status
}

func startServe(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--log-format=json"}, args...), io.Discard, log)
	}()
	r := &running{log: log}
	stopped := false
	code := 0
	r.stop = func() int {
		if !stopped {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("server did not stop")
			}
			stopped = true
		}
		return code
	}
	t.Cleanup(func() {
		if c := r.stop(); c != exitOK {
			t.Errorf("exit status %d\n%s", c, log.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); r.started == nil; {
		sc := bufio.NewScanner(strings.NewReader(log.String()))
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "ovlnfs started" {
				r.started = line
			}
		}
		select {
		case c := <-done:
			stopped, code = true, c
			t.Fatalf("server exited %d at start:\n%s", c, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no start line:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

func (r *running) field(name string) string {
	s, _ := r.started[name].(string)
	return s
}

func udpInvoke(t *testing.T, addr string, prog, vers, proc uint32, args []byte, wait time.Duration) ([]byte, error) {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return oncrpc.Invoke(ctx, c, prog, vers, proc, args)
}

func getport(t *testing.T, pm string, prog, prot uint32) uint32 {
	t.Helper()
	var w xdr.Writer
	for _, v := range []uint32{prog, 3, prot, 0} {
		w.Uint32(v)
	}
	res, err := udpInvoke(t, pm, portmap.ProgramNumber, portmap.VersionPMAP, uint32(portmap.ProcGetport), w.Buf, 5*time.Second)
	if err != nil {
		t.Fatalf("GETPORT at %s: %v", pm, err)
	}
	return xdr.NewReader(res, 0).Uint32()
}

// TestPortmapFlags: --portmap takes auto, serve, register and off; --portmap-listen
// implies serve and contradicts off and register; each refusal is one line.
func TestPortmapFlags(t *testing.T) {
	l := newLayout(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--portmap=on"}, "--portmap must be"},
		{[]string{"--portmap=off", "--portmap-listen=127.0.0.1:111"}, "contradicts --portmap=off"},
		{[]string{"--portmap=register", "--portmap-listen=127.0.0.1:111"}, "contradicts --portmap=register"},
		{[]string{"--portmap-listen=nowhere"}, "--portmap-listen"},
	} {
		code, _, stderr := runCLI(t, context.Background(), append([]string{"serve", "--lowerdir=" + l.l1}, c.args...)...)
		if code != exitBadConfig || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
	for _, c := range []struct {
		args       []string
		mode, addr string
		udp        bool
	}{
		{nil, portmapAuto, "", true},
		{[]string{"--portmap-listen=127.0.0.1:1111"}, portmapServe, "127.0.0.1:1111", true},
		{[]string{"--portmap=serve", "--udp=false"}, portmapServe, "", false},
		{[]string{"--portmap=off"}, portmapOff, "", true},
	} {
		cfg, err := parseServeArgs(append([]string{"--lowerdir=" + l.l1}, c.args...), io.Discard)
		if err != nil || cfg.portmap != c.mode || cfg.portmapListen != c.addr || cfg.udp != c.udp {
			t.Errorf("%q: %+v, %v", c.args, cfg, err)
		}
	}
}

// TestServeOwnPortmapper: with --portmap-listen the server answers the portmapper there
// (TCP and UDP), listing NFS over TCP and MOUNT over TCP and UDP at the --listen port,
// where MOUNT answers over UDP; after the stop nothing answers.
func TestServeOwnPortmapper(t *testing.T) {
	l := newLayout(t)
	r := startServe(t, "--lowerdir="+l.l1, "--listen=127.0.0.1:0", "--portmap-listen=127.0.0.1:0")
	listen, mountUDP, pm := r.field("listen"), r.field("mount_udp"), strings.TrimPrefix(r.field("portmap"), "serve ")
	if listen != mountUDP || !strings.HasPrefix(r.field("portmap"), "serve 127.0.0.1:") {
		t.Fatalf("start line: listen %q, mount_udp %q, portmap %q", listen, mountUDP, r.field("portmap"))
	}
	_, portText, _ := net.SplitHostPort(listen)
	port64, _ := strconv.ParseUint(portText, 10, 16)
	port := uint32(port64)
	for _, c := range []struct {
		prog, prot, want uint32
	}{
		{nfs3.ProgramNumber, portmap.ProtoTCP, port},
		{nfs3.ProgramNumber, portmap.ProtoUDP, 0},
		{mount.ProgramNumber, portmap.ProtoTCP, port},
		{mount.ProgramNumber, portmap.ProtoUDP, port},
	} {
		if got := getport(t, pm, c.prog, c.prot); got != c.want || port == 0 {
			t.Errorf("GETPORT %d prot %d = %d, want %d", c.prog, c.prot, got, c.want)
		}
	}
	tc, err := net.Dial("tcp", pm)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = oncrpc.Invoke(ctx, tc, portmap.ProgramNumber, portmap.VersionRPCB4, uint32(portmap.ProcDump), nil)
	cancel()
	tc.Close()
	if err != nil {
		t.Errorf("DUMP over TCP: %v", err)
	}
	res, err := udpInvoke(t, listen, mount.ProgramNumber, mount.Version, uint32(mount.ProcExport), nil, 5*time.Second)
	if rd := xdr.NewReader(res, 0); err != nil || !rd.Bool() || string(rd.Opaque()) != "/" {
		t.Errorf("EXPORT over UDP at %s: %v", listen, err)
	}
	if code := r.stop(); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var re *oncrpc.ReplyError
	if _, err := udpInvoke(t, pm, portmap.ProgramNumber, portmap.VersionPMAP, 0, nil, 1500*time.Millisecond); err == nil || errors.As(err, &re) {
		t.Errorf("portmapper still answers after the stop: %v", err)
	}
	if c, err := net.Dial("tcp", pm); err == nil {
		c.Close()
		t.Error("portmapper still accepts connections after the stop")
	}
}

// TestAutoPortmapAndUDPOff: by default a server off port 2049 runs no portmapper (port 111
// and the system's rpcbind are left alone, as the start line says); --udp=false serves
// MOUNT over TCP only.
func TestAutoPortmapAndUDPOff(t *testing.T) {
	l := newLayout(t)
	r := startServe(t, "--lowerdir="+l.l1, "--listen=127.0.0.1:0", "--udp=false")
	if got := r.field("portmap"); !strings.HasPrefix(got, "off (NFS is not on port 2049") {
		t.Errorf("portmap %q", got)
	}
	if got := r.field("mount_udp"); got != "off" {
		t.Errorf("mount_udp %q", got)
	}
	if _, err := udpInvoke(t, r.field("listen"), mount.ProgramNumber, mount.Version, 0, nil, 1500*time.Millisecond); err == nil {
		t.Error("MOUNT answered over UDP with --udp=false")
	}
}

// TestUDPPortInUse: a --listen port whose UDP side is taken is refused, in one line.
func TestUDPPortInUse(t *testing.T) {
	l := newLayout(t)
	for try := 0; ; try++ {
		busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		addr := busy.LocalAddr().String()
		if tl, err := net.Listen("tcp", addr); err != nil {
			busy.Close()
			if try < 20 {
				continue // that port's TCP side is taken too: draw another
			}
			t.Fatal(err)
		} else {
			tl.Close()
		}
		code, _, stderr := runCLI(t, context.Background(), "serve", "--lowerdir="+l.l1, "--listen="+addr)
		busy.Close()
		if code != exitBadConfig || !strings.Contains(stderr, "(UDP): address already in use") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		return
	}
}
