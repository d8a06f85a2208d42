package oncrpc

import (
	"context"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
	"golang.org/x/sys/unix"
)

// inNetns runs fn on an OS thread moved into a new network namespace (loopback up, the
// extra addresses on lo), so that the sockets fn opens live there: a wildcard socket
// binds no port of the host's. The thread is never handed back to the scheduler, so it
// ends with fn. fn runs off the test's goroutine: it reports with t.Error, not t.Fatal.
// Needs root: without it the test fails in CI and skips elsewhere.
func inNetns(t *testing.T, addrs []string, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if ci := strings.ToLower(os.Getenv("CI")); ci != "" && ci != "0" && ci != "false" {
			t.Fatal("PREREQUISITE MISSING in CI: this test needs root (a network namespace of its own)")
		}
		t.Skip("SKIPPED, PREREQUISITE MISSING: this test needs root (a network namespace of its own)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the ip command (package iproute2) is needed")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare(CLONE_NEWNET): %v", err)
			return
		}
		// A child forked from this thread is in its namespace.
		cmds := [][]string{{"ip", "link", "set", "lo", "up"}}
		for _, a := range addrs {
			c := []string{"ip", "addr", "add", a, "dev", "lo"}
			if strings.Contains(a, ":") {
				c = append(c, "nodad") // usable at once, not tentative for a second
			}
			cmds = append(cmds, c)
		}
		for _, c := range cmds {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Errorf("%v: %v %s", c, err, out)
				return
			}
		}
		// The kernel installs an address's local route a moment after `ip addr add`
		// returns (from a work queue, even with nodad), and a socket connected before
		// keeps the route it found then: wait for each.
		for _, a := range addrs {
			if !waitLocalRoute(strings.Split(a, "/")[0]) {
				t.Errorf("no local route for %s after 5 s", a)
				return
			}
		}
		fn()
	}()
	<-done
}

// waitLocalRoute waits up to 5 s for the local route of addr, in the thread's namespace.
func waitLocalRoute(addr string) bool {
	family := "-4"
	if strings.Contains(addr, ":") {
		family = "-6"
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		out, err := exec.Command("ip", family, "route", "show", "table", "local", addr).Output()
		if err == nil && strings.Contains(string(out), addr) {
			return true
		}
	}
	return false
}

// TestUDPWildcardSocket: a socket bound to every address answers each call from the
// address it reached (a connected client accepts no other source) and tells the handler
// that address; over IPv6, a datagram over MaxDatagram is answered GARBAGE_ARGS.
func TestUDPWildcardSocket(t *testing.T) {
	inNetns(t, []string{"10.213.99.1/32", "fd00:213:99::1/128"}, func() {
		for _, tc := range []struct {
			network, bind string
			clients       [][2]string // local, remote host
		}{
			{"udp4", "0.0.0.0", [][2]string{{"127.0.0.1", "127.0.0.1"}, {"127.0.0.1", "10.213.99.1"}, {"10.213.99.1", "127.0.0.1"}}},
			{"udp", "::", [][2]string{{"127.0.0.1", "10.213.99.1"}, {"::1", "fd00:213:99::1"}, {"::1", "::1"}}},
		} {
			f := startUDPOn(t, tc.network, tc.bind)
			if f == nil {
				return
			}
			port := f.pc.LocalAddr().(*net.UDPAddr).Port
			for i, cl := range tc.clients {
				laddr := &net.UDPAddr{IP: net.ParseIP(cl[0])}
				raddr := &net.UDPAddr{IP: net.ParseIP(cl[1]), Port: port}
				c, err := net.DialUDP("udp", laddr, raddr)
				if err != nil {
					t.Errorf("%s: dial %v from %v: %v", tc.bind, raddr, laddr, err)
					continue
				}
				// Sent again if lost: the kernel may install an address's local route a
				// moment after `ip addr add` returns.
				reply := exchangeSure(t, c, callRecord(uint32(10+i), testProg, testVers, 5, AuthNone, nil, nil))
				c.Close()
				if reply == nil {
					t.Errorf("socket on %s: no reply from %v to %v (sent from another address?)", tc.bind, raddr, laddr)
					continue
				}
				at, ok := ResultsAt(reply)
				if !ok {
					t.Errorf("socket on %s, call to %v: %s", tc.bind, raddr, ReplyOutcome(reply))
					continue
				}
				r := xdr.NewReader(reply, at)
				where := string(r.Opaque())
				wantIP, _, _ := net.SplitHostPort(where)
				if !net.ParseIP(wantIP).Equal(raddr.IP) {
					t.Errorf("socket on %s, call to %v: the handler was told %s", tc.bind, raddr, where)
				}
			}
			if tc.bind == "::" {
				c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv6loopback, Port: port})
				if err != nil {
					t.Error(err)
					return
				}
				// 65,520 bytes: IPv6 carries it, it is over MaxDatagram, and it would be a
				// well-formed ECHO.
				big := callRecord(2, testProg, testVers, 1, AuthNone, nil, echoArgs(make([]byte, 65520-44)))
				if reply := exchange(t, c, big, 3*time.Second); len(big) != 65520 || ReplyOutcome(reply) != "GARBAGE_ARGS" {
					t.Errorf("a %d-byte datagram over IPv6: %s", len(big), ReplyOutcome(reply))
				}
				c.Close()
			}
			f.stop(t)
		}
	})
}

// startUDPOn serves testProgram on a socket of the given network and address (port 0),
// with no cleanup but stop's (the socket lives in inNetns's namespace); nil after an
// error (it runs off the test's goroutine).
func startUDPOn(t *testing.T, network, host string) *udpFixture {
	p := &testProgram{release: make(chan struct{})}
	close(p.release)
	srv, err := New(Config{Programs: []Program{p.program()}})
	if err != nil {
		t.Error(err)
		return nil
	}
	pc, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(host)})
	if err != nil {
		t.Error(err)
		return nil
	}
	f := &udpFixture{srv: srv, pc: pc, prog: p, served: make(chan error, 1)}
	go func() { f.served <- srv.ServeUDP(pc) }()
	return f
}

func (f *udpFixture) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Error(err)
	}
	if err := <-f.served; err != nil {
		t.Errorf("ServeUDP: %v", err)
	}
	f.pc.Close()
}
