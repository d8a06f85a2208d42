package oncrpc

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestInvoke: Invoke over TCP and over UDP returns a call's results, and a refusal as a
// *ReplyError naming it (with the versions offered after PROG_MISMATCH).
func TestInvoke(t *testing.T) {
	p := &testProgram{release: make(chan struct{})}
	close(p.release)
	srv, err := New(Config{Programs: []Program{p.program()}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	f := startUDP(t)
	t.Cleanup(func() {
		l.Close()
		_ = srv.Shutdown(context.Background())
	})
	tcp, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	for name, conn := range map[string]net.Conn{"tcp": tcp, "udp": f.dial(t)} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := Invoke(ctx, conn, testProg, testVers, 1, echoArgs([]byte("abc")))
		if err != nil || !bytes.Equal(res, echoArgs([]byte("abc"))) {
			t.Errorf("%s ECHO: %x, %v", name, res, err)
		}
		_, err = Invoke(ctx, conn, testProg, 9, 0, nil)
		var re *ReplyError
		if !errors.As(err, &re) || re.Outcome != "PROG_MISMATCH" || re.Low != testVers || re.High != testVers {
			t.Errorf("%s version 9: %v, want PROG_MISMATCH 1..1", name, err)
		}
		_, err = Invoke(ctx, conn, testProg, testVers, 1, []byte{1})
		if !errors.As(err, &re) || re.Outcome != "GARBAGE_ARGS" {
			t.Errorf("%s bad arguments: %v, want GARBAGE_ARGS", name, err)
		}
		cancel()
	}
}

// TestInvokeResendsAndTimesOut: over UDP a lost call is sent again; with nothing
// answering, Invoke gives up when ctx ends.
func TestInvokeResendsAndTimesOut(t *testing.T) {
	// A "server" that drops the first datagram and answers the second from the real one.
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	f := startUDP(t)
	back := f.dial(t)
	go func() {
		buf := make([]byte, MaxDatagram)
		for i := 0; ; i++ {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if i == 0 {
				continue
			}
			if _, err := back.Write(buf[:n]); err != nil {
				return
			}
			m, err := back.Read(buf)
			if err != nil {
				return
			}
			_, _ = front.WriteToUDP(buf[:m], from)
		}
	}()
	c, err := net.DialUDP("udp", nil, front.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	started := time.Now()
	if _, err := Invoke(ctx, c, testProg, testVers, 0, nil); err != nil {
		t.Fatalf("with the first datagram lost: %v", err)
	}
	if time.Since(started) < resendEvery/2 {
		t.Errorf("answered in %v: the first datagram was not the one lost", time.Since(started))
	}

	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c2, err := net.DialUDP("udp", nil, silent.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel2()
	if _, err := Invoke(short, c2, testProg, testVers, 0, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("nothing answering: %v, want the deadline", err)
	}
}
