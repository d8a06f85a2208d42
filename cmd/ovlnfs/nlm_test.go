package main

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestNLMFlags: --nlm takes on and off, --nlm-listen defaults to the --listen host on any
// port and contradicts --nlm=off, --grace takes a duration of 0 or more (90 s by
// default); each refusal is one line.
func TestNLMFlags(t *testing.T) {
	l := newLayout(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nlm=maybe"}, "--nlm must be on or off"},
		{[]string{"--nlm=off", "--nlm-listen=127.0.0.1:4045"}, "contradicts --nlm=off"},
		{[]string{"--grace=-1s"}, "--grace must be 0 or more"},
		{[]string{"--nlm-listen=nowhere"}, "--nlm-listen"},
	} {
		code, _, stderr := runCLI(t, context.Background(), append([]string{"serve", "--lowerdir=" + l.l1}, c.args...)...)
		if code != exitBadConfig || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
	for _, c := range []struct {
		args   []string
		nlm    bool
		listen string
		grace  time.Duration
	}{
		{nil, true, "127.0.0.1:0", 90 * time.Second},
		{[]string{"--listen=0.0.0.0:2049", "--grace=5s"}, true, "0.0.0.0:0", 5 * time.Second},
		{[]string{"--nlm-listen=127.0.0.1:4045", "--grace=0"}, true, "127.0.0.1:4045", 0},
		{[]string{"--nlm=off"}, false, "127.0.0.1:0", 90 * time.Second},
	} {
		cfg, err := parseServeArgs(append([]string{"--lowerdir=" + l.l1}, c.args...), io.Discard)
		if err != nil || cfg.nlm != c.nlm || cfg.nlmListen != c.listen || cfg.grace != c.grace {
			t.Errorf("%q: %+v, %v", c.args, cfg, err)
		}
	}
}

// TestServeLockManager: the lock manager answers NLM over TCP and UDP on a port of its
// own, which the portmapper lists for NLM and NSM; the start line names it and says
// there is no grace period on a first start; with --nlm=off nothing is listed.
func TestServeLockManager(t *testing.T) {
	l := newLayout(t)
	r := startServe(t, "--lowerdir="+l.l1, "--listen=127.0.0.1:0", "--portmap-listen=127.0.0.1:0")
	addr, pm := r.field("nlm"), strings.TrimPrefix(r.field("portmap"), "serve ")
	_, portText, err := net.SplitHostPort(addr)
	if err != nil || r.field("grace") != "none" || addr == r.field("listen") {
		t.Fatalf("start line: nlm %q, grace %q, listen %q", addr, r.field("grace"), r.field("listen"))
	}
	port, _ := strconv.Atoi(portText)
	for _, c := range []struct{ prog, prot uint32 }{
		{nlm.ProgramNumber, portmap.ProtoTCP}, {nlm.ProgramNumber, portmap.ProtoUDP},
		{nsm.ProgramNumber, portmap.ProtoUDP}, {nsm.ProgramNumber, portmap.ProtoTCP},
	} {
		if got := getport(t, pm, c.prog, c.prot); got != uint32(port) {
			t.Errorf("GETPORT %d prot %d = %d, want %d", c.prog, c.prot, got, port)
		}
	}
	for _, netid := range []string{"tcp", "udp"} {
		c := &rpctest.NLMClient{Addr: addr, Netid: netid, Vers: 4, Name: "test"}
		if st, err := c.Lock(nlm.LockArgs{Lock: c.LockOf([]byte("no handle"), 1, 0, 0)}); err != nil || st != nlm.StatStaleFH {
			t.Errorf("LOCK over %s of no handle: %d %v", netid, st, err)
		}
	}
	r.stop()

	off := startServe(t, "--lowerdir="+l.l1, "--listen=127.0.0.1:0", "--portmap-listen=127.0.0.1:0", "--nlm=off")
	if off.field("nlm") != "off" {
		t.Errorf("nlm %q with --nlm=off", off.field("nlm"))
	}
	if got := getport(t, strings.TrimPrefix(off.field("portmap"), "serve "), nlm.ProgramNumber, portmap.ProtoTCP); got != 0 {
		t.Errorf("NLM listed with --nlm=off: port %d", got)
	}
}
