package nlm_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// The harness: the lock manager and its status monitor served over TCP and UDP on
// 127.0.0.1 as ovlnfs serves them, and a client host of the tests' own on 127.0.0.1: its
// portmapper (package portmap, on an ephemeral port, which the server is told to ask),
// its lock manager (which takes the server's GRANTED calls and _RES messages) and its
// status monitor (which takes the server's SM_NOTIFY). The tests speak NLM to the
// server with oncrpc.Invoke.

// staleFH is a handle the test Key rejects.
var staleFH = []byte("stale")

type server struct {
	table *locks.Manager
	mon   *nsm.Monitor
	nlm   *nlm.Server
	rpc   *oncrpc.Server
	tcp   net.Listener
	udp   *net.UDPConn
	done  sync.WaitGroup
}

type serverOpts struct {
	dir          string
	grace        time.Duration
	attempts     int
	pmPort       uint16
	idle         time.Duration
	callTimeout  time.Duration
	maxLocksHost int
}

func startServer(t *testing.T, o serverOpts) *server {
	t.Helper()
	s := &server{}
	var err error
	s.mon, err = nsm.New(nsm.Config{Dir: o.dir, PortmapPort: o.pmPort,
		Rebooted: func(sender netip.Addr, monName string, state int32) { s.nlm.Rebooted(sender, monName, state) }})
	if err != nil {
		t.Fatal(err)
	}
	grace := time.Duration(0)
	if len(s.mon.Previous()) > 0 {
		grace = o.grace
	}
	s.table = locks.New(locks.Config{Grace: grace, MaxLocksPerHost: o.maxLocksHost})
	s.nlm, err = nlm.New(nlm.Config{Locks: s.table, Monitor: s.mon, Name: "testserver", PortmapPort: o.pmPort,
		Key: func(fh []byte, _ netip.Addr) (string, error) {
			if string(fh) == string(staleFH) {
				return "", errors.New("stale")
			}
			return "file:" + string(fh), nil
		},
		GrantAttempts: o.attempts, GrantRetry: 20 * time.Millisecond, CallTimeout: o.callTimeout, IdleUnmonitor: o.idle})
	if err != nil {
		t.Fatal(err)
	}
	s.rpc, err = oncrpc.New(oncrpc.Config{Programs: append(s.nlm.Programs(), s.mon.Program())})
	if err != nil {
		t.Fatal(err)
	}
	s.tcp, s.udp = listenBoth(t)
	s.done.Go(func() { _ = s.rpc.Serve(s.tcp) })
	s.done.Go(func() { _ = s.rpc.ServeUDP(s.udp) })
	t.Cleanup(s.stop)
	return s
}

// stop is the server's shutdown; it may be called twice.
func (s *server) stop() {
	if s.tcp == nil {
		return
	}
	s.tcp.Close()
	_ = s.rpc.Shutdown(context.Background())
	s.udp.Close()
	s.done.Wait()
	s.nlm.Close()
	_ = s.mon.Close()
	s.tcp = nil
}

func listenBoth(t *testing.T) (net.Listener, *net.UDPConn) {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: l.Addr().(*net.TCPAddr).Port})
		if err == nil {
			return l, pc
		}
		l.Close()
	}
	t.Fatal("no port free for TCP and UDP")
	return nil, nil
}

// clientCall is a call the client host's lock manager or status monitor took.
type clientCall struct {
	prog, vers, proc uint32
	netid            string
	args             []byte
}

// clientHost is the tests' client host.
type clientHost struct {
	t      *testing.T
	pmPort uint16
	calls  chan clientCall
	// grantAnswer is what its lock manager answers a GRANTED call.
	grantAnswer atomic.Uint32
	// grantDelay holds GRANTED answers back.
	grantDelay atomic.Int64
}

func startClientHost(t *testing.T) *clientHost {
	t.Helper()
	c := &clientHost{t: t, calls: make(chan clientCall, 64)}
	record := func(ctx context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
		netid := "tcp"
		if _, ok := call.LocalAddr.(*net.UDPAddr); ok {
			netid = "udp"
		}
		cc := clientCall{call.Prog, call.Vers, call.Proc, netid, append([]byte(nil), call.Args.Buf[call.Args.Pos:]...)}
		if call.Prog == nlm.ProgramNumber && nlm.Proc(call.Proc) == nlm.ProcGranted {
			time.Sleep(time.Duration(c.grantDelay.Load()))
			a, err := nlm.DecodeTestArgs(call.Args, call.Vers)
			if err != nil {
				return oncrpc.ErrGarbageArgs
			}
			nlm.Res{Cookie: a.Cookie, Stat: c.grantAnswer.Load()}.Encode(&reply.Writer)
		}
		select {
		case c.calls <- cc:
		default:
			t.Error("the client host's call queue is full")
		}
		return nil
	}
	var progs []oncrpc.Program
	for _, v := range []uint32{nlm.Version1, nlm.Version3, nlm.Version4} {
		procs := make([]oncrpc.Procedure, nlm.ProcGrantedRes+1)
		for p := range procs {
			procs[p] = oncrpc.Procedure{Name: fmt.Sprint(p), Handle: record}
		}
		progs = append(progs, oncrpc.Program{Name: fmt.Sprintf("CLIENTNLM%d", v), Number: nlm.ProgramNumber, Version: v, Procedures: procs})
	}
	smProcs := make([]oncrpc.Procedure, nsm.ProcNotify+1)
	smProcs[nsm.ProcNotify] = oncrpc.Procedure{Name: "NOTIFY", Handle: record}
	progs = append(progs, oncrpc.Program{Name: "CLIENTNSM", Number: nsm.ProgramNumber, Version: nsm.Version, Procedures: smProcs})
	rpc, err := oncrpc.New(oncrpc.Config{Programs: progs})
	if err != nil {
		t.Fatal(err)
	}
	l, pc := listenBoth(t)
	var services []portmap.Service
	for _, a := range []net.Addr{l.Addr(), pc.LocalAddr()} {
		for _, pv := range [][2]uint32{{nlm.ProgramNumber, 1}, {nlm.ProgramNumber, 3}, {nlm.ProgramNumber, 4}, {nsm.ProgramNumber, 1}} {
			s, err := portmap.ServicesAt(pv[0], pv[1], a)
			if err != nil {
				t.Fatal(err)
			}
			services = append(services, s...)
		}
	}
	pm, err := portmap.New(portmap.Config{Services: services})
	if err != nil {
		t.Fatal(err)
	}
	pmRPC, err := oncrpc.New(oncrpc.Config{Programs: pm.Programs()})
	if err != nil {
		t.Fatal(err)
	}
	pmConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.pmPort = uint16(pmConn.LocalAddr().(*net.UDPAddr).Port)
	var wg sync.WaitGroup
	wg.Go(func() { _ = rpc.Serve(l) })
	wg.Go(func() { _ = rpc.ServeUDP(pc) })
	wg.Go(func() { _ = pmRPC.ServeUDP(pmConn) })
	t.Cleanup(func() {
		l.Close()
		_ = rpc.Shutdown(context.Background())
		_ = pmRPC.Shutdown(context.Background())
		pc.Close()
		pmConn.Close()
		wg.Wait()
	})
	return c
}

// next waits for the client host's next call.
func (c *clientHost) next(timeout time.Duration) (clientCall, bool) {
	select {
	case cc := <-c.calls:
		return cc, true
	case <-time.After(timeout):
		return clientCall{}, false
	}
}

// expect waits for a call of a procedure, failing on any other first.
func (c *clientHost) expect(prog uint32, proc uint32) clientCall {
	c.t.Helper()
	cc, ok := c.next(5 * time.Second)
	if !ok {
		c.t.Fatalf("no call of %d proc %d reached the client host", prog, proc)
	}
	if cc.prog != prog || cc.proc != proc {
		c.t.Fatalf("the client host got %d.%d.%d, want proc %d of %d", cc.prog, cc.vers, cc.proc, proc, prog)
	}
	return cc
}

// quiet checks that no call reaches the client host for a while.
func (c *clientHost) quiet(d time.Duration) {
	c.t.Helper()
	if cc, ok := c.next(d); ok {
		c.t.Fatalf("unexpected call %d.%d.%d reached the client host", cc.prog, cc.vers, cc.proc)
	}
}

// client speaks to the server as one host.
type client struct {
	t     *testing.T
	s     *server
	netid string
	vers  uint32
	name  string
	from  string // the local address to call from ("": any)
}

func (c *client) call(proc nlm.Proc, args []byte) ([]byte, error) {
	return c.callProg(nlm.ProgramNumber, c.vers, uint32(proc), args)
}

func (c *client) callProg(prog, vers, proc uint32, args []byte) ([]byte, error) {
	addr := c.s.tcp.Addr().String()
	if c.netid == "udp" {
		addr = c.s.udp.LocalAddr().String()
	}
	d := net.Dialer{}
	if c.from != "" {
		if c.netid == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(c.from)}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.from)}
		}
	}
	conn, err := d.Dial(c.netid, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return oncrpc.Invoke(ctx, conn, prog, vers, proc, args)
}

func (c *client) lockOf(fh string, svid int32, off, length uint64) nlm.Lock {
	return nlm.Lock{CallerName: []byte(c.name), FH: []byte(fh), OH: []byte(fmt.Sprintf("%d@%s", svid, c.name)), SVID: svid, Offset: off, Length: length}
}

func (c *client) res(proc nlm.Proc, enc func(w *xdr.Writer)) nlm.Res {
	c.t.Helper()
	var w xdr.Writer
	enc(&w)
	out, err := c.call(proc, w.Buf)
	if err != nil {
		c.t.Fatalf("%v: %v", proc, err)
	}
	r, err := nlm.DecodeRes(xdr.NewReader(out, 0), c.vers)
	if err != nil {
		c.t.Fatalf("%v reply: %v", proc, err)
	}
	return r
}

func (c *client) lock(a nlm.LockArgs) uint32 {
	c.t.Helper()
	return c.res(nlm.ProcLock, func(w *xdr.Writer) { a.Encode(w, c.vers) }).Stat
}

func (c *client) unlock(l nlm.Lock) uint32 {
	c.t.Helper()
	return c.res(nlm.ProcUnlock, func(w *xdr.Writer) { nlm.UnlockArgs{Cookie: []byte("u"), Lock: l}.Encode(w, c.vers) }).Stat
}

func (c *client) cancel(a nlm.CancelArgs) uint32 {
	c.t.Helper()
	return c.res(nlm.ProcCancel, func(w *xdr.Writer) { a.Encode(w, c.vers) }).Stat
}

func (c *client) test(exclusive bool, l nlm.Lock) nlm.TestRes {
	c.t.Helper()
	var w xdr.Writer
	nlm.TestArgs{Cookie: []byte("t"), Exclusive: exclusive, Lock: l}.Encode(&w, c.vers)
	out, err := c.call(nlm.ProcTest, w.Buf)
	if err != nil {
		c.t.Fatalf("TEST: %v", err)
	}
	r, err := nlm.DecodeTestRes(xdr.NewReader(out, 0), c.vers)
	if err != nil {
		c.t.Fatalf("TEST reply: %v", err)
	}
	return r
}

func (c *client) share(a nlm.ShareArgs, proc nlm.Proc) nlm.ShareRes {
	c.t.Helper()
	var w xdr.Writer
	a.Encode(&w)
	out, err := c.call(proc, w.Buf)
	if err != nil {
		c.t.Fatalf("%v: %v", proc, err)
	}
	r, err := nlm.DecodeShareRes(xdr.NewReader(out, 0), c.vers)
	if err != nil {
		c.t.Fatalf("%v reply: %v", proc, err)
	}
	return r
}

// eventually polls cond for up to five seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heldBy(s *server, fh string) []locks.Lock {
	ls := s.table.Locks("file:" + fh)
	slices.SortFunc(ls, func(a, b locks.Lock) int { return int(a.Owner.SVID - b.Owner.SVID) })
	return ls
}
