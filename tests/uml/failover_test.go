package uml

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// floatingIP is the address the gateways hand over: a /32 on the namespace's tap, added by
// the gateway that takes over (--takeover-exec) and removed by the one that stops
// (--release-exec). The guest mounts it, never serverIP.
const floatingIP = "10.213.77.10"

// TestKernelClientFailover: gateways over the same directories (the layers, the upper
// and the workdir with the lock manager's state in it), `ovlnfs serve --standby` each, in
// the namespace, the floating address brought up by the one that holds the workdir lock.
// The UML kernel client mounts the floating address (hard, with locking), holds a file
// open for reading and one for appending, a cwd in the mount and an NLM lock, has written
// and fsync'd a file, and runs a `cp -a`. Then:
//
//  1. gateway 1 is killed (SIGKILL); gateway 2, waiting on the workdir lock, takes it,
//     brings the address up and serves: the client's files, cwd and cp go on without
//     ESTALE, the fsync'd data and the copy are in the upper, and the guest's lockd reclaims its lock in
//     gateway 2's grace period after gateway 2's SM_NOTIFY (a Go NLM client in the
//     namespace sees the lock held after the grace period);
//  2. with gateway 3 on standby, gateway 2 is stopped (SIGTERM, a planned move): it
//     takes the address down and lets the workdir go; gateway 3 takes over the same
//     way, a second `cp -a` and the held files go on, the lock is reclaimed again.
//
// What this does not show: two machines (the address stays on one host's tap; no ARP
// moves), shared storage other than a local filesystem, fencing of a gateway that lost
// the lock's filesystem without dying (docs/failover.md).
func TestKernelClientFailover(t *testing.T) {
	requirePrerequisites(t)
	testenv.RequireCommands(t, "rpcinfo", "mount.nfs", "rpcbind", "rpc.statd", "gcc")
	testsDir, bin, out := workloadDirs(t, "failover")
	for _, f := range []string{"guest.status", "transcript.txt", "lock-held", "ready1", "taken-over", "ready2", "moved",
		"guest-done", "release", "mount-options.txt"} {
		os.Remove(filepath.Join(out, f))
	}
	helper := filepath.Join(out, "lockhelper")
	if b, err := exec.Command("gcc", "-static", "-O2", "-o", helper, filepath.Join(testsDir, "lockhelper", "lockhelper.c")).CombinedOutput(); err != nil {
		testenv.Missing(t, "gcc -static (static libc, package libc6-dev) cannot build lockhelper: %v %s", err, b)
	}

	root := t.TempDir()
	lower, upper, work := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work")
	big := make([]byte, 1<<20+6)
	copy(big[len(big)-6:], "theend")
	files := map[string]string{"lower/big.bin": string(big), "lower/held/log.txt": "from the lower layer\n",
		"lower/held/inside/a": "a", "lower/lock.txt": ""}
	for i := 0; i < 50; i++ {
		for j := 0; j < 40; j++ {
			layer := "lower"
			if (i+j)%3 == 0 {
				layer = "upper"
			}
			files[fmt.Sprintf("%s/tree/d%02d/f%02d", layer, i, j)] = strings.Repeat(fmt.Sprintf("%d-%d ", i, j), 200)
		}
	}
	testenv.WriteFiles(t, root, files)
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	ns := newNetns(t)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "exec", ns, "ip", "addr", "del", floatingIP+"/32", "dev", tapName).Run()
	})
	args := []string{"--standby", "--lowerdir=" + lower, "--upperdir=" + upper, "--workdir=" + work,
		"--listen=" + floatingIP + ":" + nfsPort, "--log-level=debug", "--grace=" + lockGrace.String(),
		"--takeover-exec=ip addr replace " + floatingIP + "/32 dev " + tapName,
		"--release-exec=ip addr del " + floatingIP + "/32 dev " + tapName}
	inNS := []string{"ip", "netns", "exec", ns}
	gw1 := testenv.StartServer(t, bin, inNS, args...)
	gw2 := testenv.LaunchServer(t, bin, inNS, args...)
	if err := waitServerLog(gw2, "standby: waiting for the workdir lock", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw2.Started():
		t.Fatalf("gateway 2 started while gateway 1 holds the workdir:\n%s", gw2.Log())
	default:
	}

	host := &hostClient{t: t, ns: ns, out: out}
	type takeover struct {
		old, new *testenv.Server
		seconds  float64
	}
	hostDone := make(chan []takeover, 1)
	go func() {
		var ts []takeover
		defer func() { hostDone <- ts }()
		lockHeld := func(when string, gw *testenv.Server) {
			m := regexp.MustCompile(`nlm=(\S+)`).FindStringSubmatch(gw.Log())
			if m == nil {
				t.Errorf("%s: no nlm= on the start line", when)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := host.dial(ctx, "tcp", floatingIP+":"+nfsPort)
			cancel()
			if err != nil {
				t.Errorf("%s: NFS from the namespace: %v", when, err)
				return
			}
			defer conn.Close()
			nfsc := rpctest.New(t, conn)
			fh := nfsc.Lookup(nfsc.MountRoot(), "lock.txt")
			c := &rpctest.NLMClient{Addr: m[1], Netid: "tcp", Vers: 4, Name: "go-client", Dial: host.dial}
			res, err := c.Test(true, c.LockOf(fh, 4242, 0, 0))
			if err != nil || res.Stat != nlm.StatDenied || !res.Holder.Exclusive {
				t.Errorf("%s: TEST of the guest's lock: %+v %v, want it held", when, res, err)
			}
		}
		if !host.waitFile("ready1", 3*time.Minute) {
			t.Error("the guest never got ready for the kill")
			return
		}
		lockHeld("before the kill", gw1)
		t0 := time.Now()
		gw1.Kill()
		select {
		case <-gw2.Started():
		case <-time.After(30 * time.Second):
			t.Errorf("gateway 2 did not take over:\n%s", gw2.Log())
			return
		}
		ts = append(ts, takeover{old: gw1, new: gw2, seconds: time.Since(t0).Seconds()})
		started := time.Now()
		os.WriteFile(filepath.Join(out, "taken-over"), nil, 0o644)
		gw3 := testenv.LaunchServer(t, bin, inNS, args...)
		if err := waitServerLog(gw3, "standby: waiting for the workdir lock", 20*time.Second); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(time.Until(started.Add(lockGrace + 2*time.Second)))
		lockHeld("after gateway 2's grace period", gw2)

		if !host.waitFile("ready2", 3*time.Minute) {
			t.Error("the guest never got ready for the move")
			return
		}
		t0 = time.Now()
		if code, err := gw2.Stop(20 * time.Second); code != 0 || err != nil {
			t.Errorf("gateway 2 on SIGTERM: exit %d %v", code, err)
		}
		select {
		case <-gw3.Started():
		case <-time.After(30 * time.Second):
			t.Errorf("gateway 3 did not take over:\n%s", gw3.Log())
			return
		}
		ts = append(ts, takeover{old: gw2, new: gw3, seconds: time.Since(t0).Seconds()})
		started = time.Now()
		os.WriteFile(filepath.Join(out, "moved"), nil, 0o644)
		time.Sleep(time.Until(started.Add(lockGrace + 2*time.Second)))
		lockHeld("after gateway 3's grace period", gw3)
		host.waitFile("guest-done", 3*time.Minute)
		os.WriteFile(filepath.Join(out, "release"), nil, 0o644)
	}()

	runGuest(t, ns, testsDir, out, "WORKLOAD=failover-workload.sh", "MANIFEST=no", "PLAINMOUNT=yes", "LOCKS=yes",
		"SRV="+floatingIP, "NFSOPTS=timeo=10,actimeo=1")
	os.WriteFile(filepath.Join(out, "release"), nil, 0o644) // should the host side still wait
	var ts []takeover
	select {
	case ts = <-hostDone:
	case <-time.After(time.Minute):
		t.Error("the host side did not finish")
	}
	time.Sleep(time.Second) // the guest's unlock reaches the last gateway's log
	for i, tk := range ts {
		os.WriteFile(filepath.Join(out, fmt.Sprintf("takeover-%d-old.log", i+1)), []byte(tk.old.Log()), 0o644)
		os.WriteFile(filepath.Join(out, fmt.Sprintf("takeover-%d-new.log", i+1)), []byte(tk.new.Log()), 0o644)
		t.Logf("takeover %d: the new gateway served %.2f s after the old one was signalled", i+1, tk.seconds)
	}

	transcript, read := guestResult(t, out)
	if opts := read("mount-options.txt"); strings.Contains(opts, "nolock") || !strings.Contains(opts, floatingIP) {
		t.Errorf("the guest's mount is not a locking mount of the floating address:\n%s", opts)
	}
	want := []string{
		"cp running at the kill", "== after the kill", "read: theend", "append ok",
		"cat log: from the lower layer before-kill after-kill", "create in held dir ok",
		"cp copy1 exit status 0", "copy1 compares equal", "files in copy1: 2051 of 2051",
		"cp running at the move", "== after the move",
		"cat log: from the lower layer before-kill after-kill after-move",
		"cp copy2 exit status 0", "copy2 compares equal", "files in copy2: 2051 of 2051",
		"lock holder: lock w 0 0: ok", "lock holder: waitfile /mnt/release: ok", "== done",
	}
	if !wantLinesIn(t, transcript, want) {
		t.Errorf("transcript:\n%s", transcript)
	}
	if n := strings.Count(transcript, "read: theend"); n != 2 {
		t.Errorf("the files held open read right after %d moves of 2", n)
	}
	for _, bad := range []string{"Stale", "stale", "FAIL", "Input/output error"} {
		if strings.Contains(transcript, bad) {
			t.Errorf("transcript contains %q", bad)
		}
	}
	// The fsync'd file: the same through each gateway and in the upper.
	m := regexp.MustCompile(`(?m)^acked written: (\w+)$`).FindStringSubmatch(transcript)
	if m == nil {
		t.Fatal("the guest wrote no acknowledged file")
	}
	if n := strings.Count(transcript, "acked: "+m[1]); n != 2 {
		t.Errorf("the acknowledged file read back the same %d times of 2", n)
	}
	data, err := os.ReadFile(filepath.Join(upper, "acked.bin"))
	if sum := fmt.Sprintf("%x", sha256.Sum256(data)); err != nil || len(data) != 1<<20 || sum[:16] != m[1] {
		t.Errorf("the upper's acked.bin: %d bytes, sha256 %s, %v; want 1 MiB, %s", len(data), sum[:16], err, m[1])
	}
	// The copies, as the gateways wrote them to the upper (the guest's own diff may have
	// read its page cache): every file of the tree, with its content.
	for _, cp := range []string{"copy1", "copy2"} {
		n, bad := 0, 0
		for name, content := range files {
			rel, ok := strings.CutPrefix(strings.SplitN(name, "/", 2)[1], "tree/")
			if !ok {
				continue
			}
			n++
			if got, err := os.ReadFile(filepath.Join(upper, cp, rel)); err != nil || string(got) != content {
				if bad++; bad <= 3 {
					t.Errorf("the upper's %s/%s: %d bytes, %v; want the tree's %d", cp, rel, len(got), err, len(content))
				}
			}
		}
		if bad > 0 || n != 2000 {
			t.Errorf("%s in the upper: %d of %d files wrong", cp, bad, n)
		}
	}
	for i, tk := range ts {
		log2 := tk.new.Log()
		if !logHas(log2, "standby: took the workdirs over") || !logHas(log2, "hook ran", "--takeover-exec") {
			t.Errorf("takeover %d: the new gateway did not log the takeover and its hook", i+1)
		}
		if !logHas(log2, "grace=\""+lockGrace.String()+" (") {
			t.Errorf("takeover %d: the new gateway started without a grace period", i+1)
		}
		if !logHas(log2, "told a client of the restart", "peer="+guestIP) {
			t.Errorf("takeover %d: the new gateway did not tell the guest (SM_NOTIFY)", i+1)
		}
		if !logHas(log2, "msg=nlm", "proc=LOCK", "reclaim=true", "status=granted") {
			t.Errorf("takeover %d: no granted reclaim in the new gateway's log", i+1)
		}
	}
	if len(ts) == 2 && !logHas(ts[1].old.Log(), "hook ran", "--release-exec") {
		t.Error("gateway 2 did not run its release hook on SIGTERM")
	}
}

// wantLinesIn reports each wanted text missing from the transcript; true if none is.
func wantLinesIn(t *testing.T, transcript string, want []string) bool {
	t.Helper()
	ok := true
	for _, w := range want {
		if !strings.Contains(transcript, w) {
			t.Errorf("transcript lacks the line %q", w)
			ok = false
		}
	}
	return ok
}

// waitServerLog waits until the server logs want (safe off the test's goroutine).
func waitServerLog(s *testenv.Server, want string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); !strings.Contains(s.Log(), want); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.Exited():
			return fmt.Errorf("the server exited before logging %q:\n%s", want, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q in the server's log within %v:\n%s", want, timeout, s.Log())
		}
	}
	return nil
}
