package uml

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
	"golang.org/x/sys/unix"
)

// lockGrace is the grace period of the restarted server in TestKernelClientLocks: long
// enough for the guest's lockd to reclaim after the server's SM_NOTIFY, short for a test.
const lockGrace = 8 * time.Second

// TestKernelClientLocks: the Linux kernel's NLM client in a UML guest, with rpcbind and
// rpc.statd of its own, mounts the export twice with `mount -t nfs -o vers=3 SERVER:/`
// (the second with nosharecache), without nolock, and runs lock-workload.sh:
//
//   - flock(1), which Linux sends as an NLM lock of the whole file: a second process is
//     refused with -n (through either mount) and, blocking, gets the lock once the first
//     lets go, by the server's GRANTED callback (well before the kernel's 30 s re-poll);
//   - fcntl byte ranges (lockhelper, built here with gcc -static): F_GETLK reports the
//     lock in the way, F_SETLK is refused over it and granted beside it, F_SETLKW waits;
//   - a lock held across a restart of ovlnfs: a Go NLM client (not the kernel) sees it
//     with TEST; the server is restarted (--grace=8s), tells the guest (SM_NOTIFY), whose
//     lockd reclaims the lock; the Go client's new lock in the grace period is
//     DENIED_GRACE_PERIOD, and the guest's own new lock waits for the grace period's end;
//     after it, TEST still finds the guest's lock, until the guest lets go.
func TestKernelClientLocks(t *testing.T) {
	requirePrerequisites(t)
	testenv.RequireCommands(t, "rpcinfo", "mount.nfs", "rpcbind", "rpc.statd", "flock", "gcc")
	testsDir, bin, out := workloadDirs(t, "locks")
	for _, f := range []string{"guest.status", "transcript.txt", "flock-held", "ranges-held", "kernel-lock-held",
		"restarted", "release", "mount-options.txt", "guest-rpcinfo.txt"} {
		os.Remove(filepath.Join(out, f)) // a kept artifacts dir from an earlier run
	}
	helper := filepath.Join(out, "lockhelper")
	if b, err := exec.Command("gcc", "-static", "-O2", "-o", helper, filepath.Join(testsDir, "lockhelper", "lockhelper.c")).CombinedOutput(); err != nil {
		testenv.Missing(t, "gcc -static (static libc, package libc6-dev) cannot build lockhelper: %v %s", err, b)
	}
	root := t.TempDir()
	testenv.WriteFiles(t, root, map[string]string{"lower/readme.txt": "locks\n"})
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	ns := newNetns(t)
	args := []string{"--lowerdir=" + filepath.Join(root, "lower"), "--upperdir=" + filepath.Join(root, "upper"),
		"--workdir=" + filepath.Join(root, "work"), "--listen=" + serverIP + ":" + nfsPort, "--log-level=debug",
		"--grace=" + lockGrace.String()}
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns}, args...)
	if !strings.Contains(server.Log(), `grace=none`) {
		t.Errorf("a first start has a grace period:\n%s", server.Log())
	}
	host := &hostClient{t: t, ns: ns, out: out}
	hostDone := make(chan string, 1)
	go func() { hostDone <- host.duringRestart(bin, args, &server) }()

	runGuest(t, ns, testsDir, out, "WORKLOAD=lock-workload.sh", "MANIFEST=no", "PLAINMOUNT=yes", "LOCKS=yes")
	os.WriteFile(filepath.Join(out, "release"), nil, 0o644) // should the host side still wait
	var firstLog string
	select {
	case firstLog = <-hostDone:
	case <-time.After(time.Minute):
		t.Error("the host side of the restart did not finish")
	}
	code, err := server.Stop(15 * time.Second)
	_ = os.WriteFile(filepath.Join(out, "ovlnfs-server-1.log"), []byte(firstLog), 0o644)
	_ = os.WriteFile(filepath.Join(out, "ovlnfs-server-2.log"), []byte(server.Log()), 0o644)
	if err != nil || code != 0 {
		t.Errorf("ovlnfs serve: exit %d, %v", code, err)
	}

	transcript, read := guestResult(t, out)
	opts := read("mount-options.txt")
	t.Logf("guest mounts:\n%s", opts)
	if strings.Contains(opts, "nolock") || !strings.Contains(opts, "local_lock=none") || !strings.Contains(opts, "nosharecache") {
		t.Errorf("the guest's mounts are not locking NFS mounts:\n%s", opts)
	}

	lines := map[string]bool{}
	for _, l := range strings.Split(transcript, "\n") {
		lines[regexp.MustCompile(` \(\d+ ms\)$`).ReplaceAllString(l, "")] = true
	}
	for _, want := range []string{
		"flock -n same mount: exit 1",
		"flock -n other mount: exit 1",
		"flock -n after release: exit 0",
		"getlk w 50 10: held w 0 100",
		"lock w 50 10: EAGAIN",
		"lock r 0 1: EAGAIN",
		"lock w 100 100: ok",
		"lock r 200 0: ok",
		"getlk r 0 0: held w 0 100",
		"lockw w 0 100: ok",
		"reclaim holder: lock w 0 0: ok",
		"reclaim holder: waitfile /mnt/release: ok",
		"in grace: lock w 0 0: ok",
		"after release: lock w 0 0: ok",
		"== done",
	} {
		if !lines[want] {
			t.Errorf("transcript lacks %q", want)
		}
	}
	// The blocked flock got the lock when the holder let go (the holder slept 3 s),
	// announced by GRANTED: the kernel's own re-poll would come after 30 s.
	if m := regexp.MustCompile(`flock blocking other mount: exit 0 waited (\d+) ms`).FindStringSubmatch(transcript); m == nil {
		t.Error("no blocking flock in the transcript")
	} else if ms, _ := strconv.Atoi(m[1]); ms < 1000 || ms > 20000 {
		t.Errorf("the blocking flock waited %d ms; want the holder's 3 s, not a re-poll's 30", ms)
	}
	if m := regexp.MustCompile(`(?m)^lockw w 0 100: ok \((\d+) ms\)$`).FindStringSubmatch(transcript); m != nil {
		if ms, _ := strconv.Atoi(m[1]); ms < 500 || ms > 20000 {
			t.Errorf("F_SETLKW waited %d ms; want until the holder's exit, about 3 s", ms)
		}
	}
	// The new lock in the grace period waited for its end.
	if m := regexp.MustCompile(`(?m)^in grace: lock w 0 0: ok \((\d+) ms\)$`).FindStringSubmatch(transcript); m != nil {
		if ms, _ := strconv.Atoi(m[1]); ms < 2000 {
			t.Errorf("a new lock in the grace period took %d ms; it should have waited for the grace period's end", ms)
		}
	}
	log1, log2 := firstLog, server.Log()
	if !logHas(log1, "nlm grant announced") {
		t.Error("no GRANTED callback was announced in the first server's log")
	}
	if !logHas(log2, "msg=nlm", "proc=LOCK", "reclaim=true", "status=granted") {
		t.Error("the restarted server's log has no granted reclaim")
	}
	if !logHas(log2, "told a client of the restart", "peer="+guestIP) {
		t.Error("the restarted server did not tell the guest")
	}
	if !logHas(log2, "msg=nlm", "proc=LOCK", "status=denied_grace_period") {
		t.Error("no lock was refused for the grace period")
	}
}

// hostClient is the Go NLM client the test runs in the server's network namespace: a
// second client that is not the kernel.
type hostClient struct {
	t   *testing.T
	ns  string
	out string
}

// dial connects from inside the namespace: the socket is made on a thread moved there,
// which is never handed back (it ends with its goroutine).
func (h *hostClient) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", h.ns))
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, err}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func (h *hostClient) waitFile(name string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(h.out, name)); err == nil {
			return true
		}
	}
	return false
}

// duringRestart is the host's side of the workload's last part; it returns the first
// server's log. It reports with t.Errorf (it runs off the test's goroutine).
func (h *hostClient) duringRestart(bin string, args []string, server **testenv.Server) string {
	t := h.t
	first := *server
	if !h.waitFile("kernel-lock-held", 3*time.Minute) {
		t.Error("the guest never held the lock to reclaim")
		return first.Log()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := h.dial(ctx, "tcp", serverIP+":"+nfsPort)
	cancel()
	if err != nil {
		t.Errorf("NFS from the namespace: %v", err)
		return first.Log()
	}
	nfsc := rpctest.New(t, conn)
	fh := nfsc.Lookup(nfsc.MountRoot(), "reclaim.txt")
	nlmAddr := func(log string) string {
		m := regexp.MustCompile(`nlm=(\S+)`).FindStringSubmatch(log)
		if m == nil {
			t.Errorf("no nlm= on the start line:\n%s", log)
			return ""
		}
		return m[1]
	}
	c := &rpctest.NLMClient{Addr: nlmAddr(first.Log()), Netid: "tcp", Vers: 4, Name: "go-client", Dial: h.dial}
	c1 := &rpctest.NLMClient{Addr: c.Addr, Netid: "udp", Vers: 1, Name: "go-client", Dial: h.dial}
	whole := c.LockOf(fh, 4242, 0, 0)
	check := func(when string, cl *rpctest.NLMClient) {
		res, err := cl.Test(true, whole)
		if err != nil || res.Stat != nlm.StatDenied || !res.Holder.Exclusive || res.Holder.Offset != 0 || res.Holder.Length != 0 {
			t.Errorf("%s: TEST (v%d over %s) of the guest's lock: %+v %v", when, cl.Vers, cl.Netid, res, err)
		}
	}
	check("before the restart", c)
	check("before the restart", c1)
	if st, err := c.Lock(nlm.LockArgs{Exclusive: true, Lock: whole}); err != nil || st != nlm.StatDenied {
		t.Errorf("before the restart: LOCK against the guest's lock: %d %v", st, err)
	}

	code, err := first.Stop(15 * time.Second)
	if err != nil || code != 0 {
		t.Errorf("first server: exit %d %v", code, err)
	}
	time.Sleep(500 * time.Millisecond)
	second := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", h.ns}, args...)
	started := time.Now()
	*server = second
	// The guest and the Go client (it asked for a lock) are the clients to reclaim.
	if !strings.Contains(second.Log(), "grace=\""+lockGrace.String()+" (2 clients") {
		t.Errorf("the restarted server's start line has no grace period for two clients:\n%s", second.Log())
	}
	os.WriteFile(filepath.Join(h.out, "restarted"), nil, 0o644)
	c.Addr, c1.Addr = nlmAddr(second.Log()), nlmAddr(second.Log())
	if st, err := c.Lock(nlm.LockArgs{Exclusive: true, Lock: whole}); err != nil || st != nlm.StatDeniedGrace {
		t.Errorf("in the grace period: a new LOCK: %d %v, want DENIED_GRACE_PERIOD", st, err)
	}
	if time.Since(started) > lockGrace {
		t.Errorf("the grace period's checks came too late (%v)", time.Since(started))
	}
	time.Sleep(time.Until(started.Add(lockGrace + time.Second)))
	check("after the grace period (the guest reclaimed)", c)
	check("after the grace period (the guest reclaimed)", c1)
	if st, err := c.Lock(nlm.LockArgs{Exclusive: true, Lock: whole}); err != nil || st != nlm.StatDenied {
		t.Errorf("after the grace period: LOCK against the reclaimed lock: %d %v", st, err)
	}
	os.WriteFile(filepath.Join(h.out, "release"), nil, 0o644)
	// The guest lets go; the lock is free for the Go client, which takes and drops it.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		res, err := c.Test(true, whole)
		if err == nil && res.Stat == nlm.StatGranted {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the guest's lock was not released: %+v %v", res, err)
			break
		}
	}
	return first.Log()
}
