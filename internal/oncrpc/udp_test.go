package oncrpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// testProgram is program 200000 version 1: 0 NULL, 1 ECHO (the arguments back, checked
// to be one opaque), 2 BIG (results of the size asked), 3 WAIT (blocks until release is
// closed, counts its runs), 4 ALONE (Exclusive; records how many calls ran beside it),
// 5 WHERE (the call's local address, as a string).
type testProgram struct {
	release chan struct{}
	waits   atomic.Int32
	running atomic.Int32
	beside  atomic.Int32
}

const testProg, testVers = 200000, 1

func (p *testProgram) program() Program {
	counted := func(h Handler) Handler {
		return func(ctx context.Context, c *Call, r *Reply) error {
			p.running.Add(1)
			defer p.running.Add(-1)
			return h(ctx, c, r)
		}
	}
	return Program{Name: "TEST", Number: testProg, Version: testVers, Procedures: []Procedure{
		{Name: "NULL", Handle: func(context.Context, *Call, *Reply) error { return nil }},
		{Name: "ECHO", Handle: counted(func(_ context.Context, c *Call, r *Reply) error {
			b := c.Args.Opaque()
			if c.Args.Err() != nil || c.Args.Remaining() != 0 {
				return ErrGarbageArgs
			}
			r.Opaque(b)
			return nil
		})},
		{Name: "BIG", Handle: counted(func(_ context.Context, c *Call, r *Reply) error {
			n := c.Args.Uint32()
			r.Fixed(make([]byte, n&^3))
			return nil
		})},
		{Name: "WAIT", Handle: counted(func(_ context.Context, c *Call, r *Reply) error {
			p.waits.Add(1)
			<-p.release
			return nil
		})},
		{Name: "ALONE", Exclusive: true, Handle: func(_ context.Context, c *Call, r *Reply) error {
			p.beside.Store(p.running.Load())
			return nil
		}},
		{Name: "WHERE", Handle: func(_ context.Context, c *Call, r *Reply) error {
			r.String(c.LocalAddr.String())
			return nil
		}},
	}}
}

type udpFixture struct {
	srv    *Server
	pc     *net.UDPConn
	prog   *testProgram
	served chan error
}

func startUDP(t *testing.T) *udpFixture {
	t.Helper()
	p := &testProgram{release: make(chan struct{})}
	srv, err := New(Config{Programs: []Program{p.program()}})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &udpFixture{srv: srv, pc: pc, prog: p, served: make(chan error, 1)}
	go func() { f.served <- srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		select {
		case <-p.release:
		default:
			close(p.release)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-f.served:
			if err != nil {
				t.Errorf("ServeUDP returned %v after Shutdown, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeUDP did not return after Shutdown")
		}
		pc.Close()
	})
	return f
}

// dial is a client socket connected to the server.
func (f *udpFixture) dial(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, f.pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends one datagram and returns the reply, or nil after wait (or an error,
// reported with t.Error: it may run off the test's goroutine).
func exchange(t *testing.T, c *net.UDPConn, datagram []byte, wait time.Duration) []byte {
	t.Helper()
	if _, err := c.Write(datagram); err != nil {
		t.Error(err)
		return nil
	}
	return readReply(t, c, wait)
}

// exchangeSure is exchange for a call that must be answered: UDP may lose a datagram (a
// 64 KiB one on a loaded machine), so the call is sent up to three times, and replies to
// other XIDs (an earlier attempt's) are read past.
func exchangeSure(t *testing.T, c *net.UDPConn, datagram []byte) []byte {
	t.Helper()
	for range 3 {
		if _, err := c.Write(datagram); err != nil {
			t.Error(err)
			return nil
		}
		for {
			reply := readReply(t, c, 3*time.Second)
			if reply == nil {
				break
			}
			if len(reply) >= 4 && bytes.Equal(reply[:4], datagram[:4]) {
				return reply
			}
		}
	}
	return nil
}

func readReply(t *testing.T, c *net.UDPConn, wait time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 70000)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		t.Error(err)
		return nil
	}
	return buf[:n]
}

func echoArgs(b []byte) []byte {
	var w xdr.Writer
	w.Opaque(b)
	return w.Buf
}

// TestUDPDispatch: over UDP, each datagram is one call answered with one datagram, with
// the same refusals as over TCP; a datagram that is no call gets no answer and the socket
// goes on.
func TestUDPDispatch(t *testing.T) {
	f := startUDP(t)
	c := f.dial(t)
	wrongRPC := callRecord(5, testProg, testVers, 0, AuthNone, nil, nil)
	binary.BigEndian.PutUint32(wrongRPC[8:], 3)
	cases := []struct {
		name     string
		datagram []byte
		want     string
	}{
		{"null", callRecord(1, testProg, testVers, 0, AuthNone, nil, nil), "SUCCESS"},
		{"prog unavailable", callRecord(2, 100021, 4, 0, AuthNone, nil, nil), "PROG_UNAVAIL"},
		{"version mismatch", callRecord(3, testProg, 7, 0, AuthNone, nil, nil), "PROG_MISMATCH"},
		{"proc unavailable", callRecord(4, testProg, testVers, 99, AuthNone, nil, nil), "PROC_UNAVAIL"},
		{"rpc version 3", wrongRPC, "RPC_MISMATCH"},
		{"bad credential", callRecord(6, testProg, testVers, 0, AuthUnix, AuthUnixBody("h", 1, 1)[:10], nil), "AUTH_ERROR"},
		{"truncated arguments", callRecord(7, testProg, testVers, 1, AuthNone, nil, []byte{0, 0, 0, 9, 'a'}), "GARBAGE_ARGS"},
		{"arguments", callRecord(8, testProg, testVers, 1, AuthNone, nil, echoArgs([]byte("hello"))), "SUCCESS"},
	}
	for _, tc := range cases {
		reply := exchange(t, c, tc.datagram, 5*time.Second)
		if reply == nil {
			t.Errorf("%s: no reply", tc.name)
			continue
		}
		if got := ReplyOutcome(reply); got != tc.want || !bytes.Equal(reply[:4], tc.datagram[:4]) {
			t.Errorf("%s: reply %s to XID %x, want %s to %x", tc.name, got, reply[:4], tc.want, tc.datagram[:4])
		}
	}
	for name, junk := range map[string][]byte{"short": {1, 2, 3}, "reply not call": {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}, "empty": {}} {
		if reply := exchange(t, c, junk, 300*time.Millisecond); reply != nil {
			t.Errorf("%s: answered %x", name, reply)
		}
	}
	reply := exchange(t, c, callRecord(9, testProg, testVers, 1, AuthNone, nil, echoArgs([]byte("again"))), 5*time.Second)
	if at, ok := ResultsAt(reply); !ok || !bytes.Equal(reply[at:], echoArgs([]byte("again"))) {
		t.Errorf("after junk: %x", reply)
	}
}

// TestUDPSizeBounds: the largest datagram IPv4 carries is a call like any other; a reply
// that no datagram can carry is answered SYSTEM_ERR instead.
func TestUDPSizeBounds(t *testing.T) {
	f := startUDP(t)
	c := f.dial(t)
	// XDR comes in 4-byte units: the largest call is 65,504 bytes.
	header := len(callRecord(1, testProg, testVers, 1, AuthNone, nil, nil))
	payload := make([]byte, MaxDatagram&^3-header-4)
	for i := range payload {
		payload[i] = byte(i)
	}
	call := callRecord(1, testProg, testVers, 1, AuthNone, nil, echoArgs(payload))
	if len(call) != MaxDatagram&^3 {
		t.Fatalf("built a %d-byte call", len(call))
	}
	reply := exchangeSure(t, c, call)
	if at, ok := ResultsAt(reply); !ok || !bytes.Equal(reply[at:], echoArgs(payload)) {
		t.Errorf("largest call: %s, %d bytes", ReplyOutcome(reply), len(reply))
	}
	// The largest datagram: the same call and three bytes more, which ECHO refuses.
	longer := append(slices.Clone(call), 1, 2, 3)
	binary.BigEndian.PutUint32(longer, 4) // its own XID
	if reply := exchangeSure(t, c, longer); ReplyOutcome(reply) != "GARBAGE_ARGS" {
		t.Errorf("largest datagram: %s, %d bytes", ReplyOutcome(reply), len(reply))
	}
	var w xdr.Writer
	w.Uint32(MaxDatagram)
	if reply := exchangeSure(t, c, callRecord(2, testProg, testVers, 2, AuthNone, nil, w.Buf)); ReplyOutcome(reply) != "SYSTEM_ERR" {
		t.Errorf("reply over the bound: %s, %d bytes", ReplyOutcome(reply), len(reply))
	}
	w = xdr.Writer{}
	w.Uint32(60000)
	if reply := exchangeSure(t, c, callRecord(3, testProg, testVers, 2, AuthNone, nil, w.Buf)); ReplyOutcome(reply) != "SUCCESS" || len(reply) < 60000 {
		t.Errorf("60,000-byte reply: %s, %d bytes", ReplyOutcome(reply), len(reply))
	}
}

// TestUDPRetransmission: a call sent again while it is being handled is handled once and
// answered once; Exclusive calls run alone; calls from other clients run beside a slow one.
func TestUDPRetransmission(t *testing.T) {
	f := startUDP(t)
	c := f.dial(t)
	wait := callRecord(77, testProg, testVers, 3, AuthNone, nil, nil)
	for range 3 {
		if _, err := c.Write(wait); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.prog.waits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// Another client is served while WAIT blocks.
	other := f.dial(t)
	if reply := exchange(t, other, callRecord(1, testProg, testVers, 0, AuthNone, nil, nil), 5*time.Second); ReplyOutcome(reply) != "SUCCESS" {
		t.Fatalf("a second client waits behind a slow call: %s", ReplyOutcome(reply))
	}
	time.Sleep(100 * time.Millisecond) // the retransmissions have been read
	close(f.prog.release)
	if reply := readReply(t, c, 5*time.Second); ReplyOutcome(reply) != "SUCCESS" {
		t.Fatalf("WAIT: %s", ReplyOutcome(reply))
	}
	if extra := readReply(t, c, 300*time.Millisecond); extra != nil {
		t.Errorf("a retransmitted call was answered twice")
	}
	if n := f.prog.waits.Load(); n != 1 {
		t.Errorf("WAIT ran %d times, want 1", n)
	}
	// After the reply, the same XID is a new call (no reply cache).
	if reply := exchange(t, c, wait, 5*time.Second); ReplyOutcome(reply) != "SUCCESS" || f.prog.waits.Load() != 2 {
		t.Errorf("WAIT sent again after its reply: %s, %d runs", ReplyOutcome(reply), f.prog.waits.Load())
	}
	if reply := exchange(t, c, callRecord(78, testProg, testVers, 4, AuthNone, nil, nil), 5*time.Second); ReplyOutcome(reply) != "SUCCESS" || f.prog.beside.Load() != 0 {
		t.Errorf("ALONE: %s with %d calls beside it", ReplyOutcome(reply), f.prog.beside.Load())
	}
}

// TestUDPShutdownDrains: Shutdown stops the reading, the reply of a call already read
// still goes out, and ServeUDP returns nil; a call sent after gets no answer.
func TestUDPShutdownDrains(t *testing.T) {
	p := &testProgram{release: make(chan struct{})}
	srv, err := New(Config{Programs: []Program{p.program()}})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	served := make(chan error, 1)
	go func() { served <- srv.ServeUDP(pc) }()
	f := &udpFixture{pc: pc}
	c := f.dial(t)
	if _, err := c.Write(callRecord(5, testProg, testVers, 3, AuthNone, nil, nil)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); p.waits.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a call in flight", err)
	default:
	}
	close(p.release)
	if reply := readReply(t, c, 5*time.Second); ReplyOutcome(reply) != "SUCCESS" {
		t.Errorf("the call in flight: %s", ReplyOutcome(reply))
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDP still running after Shutdown")
	}
	if reply := exchange(t, c, callRecord(6, testProg, testVers, 0, AuthNone, nil, nil), 300*time.Millisecond); reply != nil {
		t.Errorf("answered after Shutdown: %s", ReplyOutcome(reply))
	}
}

// TestUDPClosed: ServeUDP on a socket closed under it returns net.ErrClosed.
func TestUDPClosed(t *testing.T) {
	srv, err := New(Config{Programs: []Program{(&testProgram{}).program()}})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeUDP(pc) }()
	time.Sleep(50 * time.Millisecond)
	pc.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ServeUDP: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDP did not return")
	}
}
