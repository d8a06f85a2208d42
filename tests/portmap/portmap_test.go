// Package portmap_test runs `ovlnfs serve` on the standard ports (2049, 111) inside
// network namespaces the tests create, and asks it with the real clients: rpcinfo,
// showmount (packages rpcbind, nfs-common) and nfs-ls (libnfs-utils) with no port
// options; and with a system rpcbind running (rpcbind -f -w in the namespace), that
// ovlnfs registers with it and unregisters on exit.
//
// Each test's sandbox is a network namespace (loopback up) and a mount namespace with a
// tmpfs on /run, held by a sleeping process: rpcbind's /run/rpcbind.sock, and whatever
// /run/rpcbind.sock the host has (another run's rpcbind), stay apart. Every command runs
// in both through nsenter; the holder, rpcbind and every server are stopped at cleanup,
// and the namespace is deleted.
package portmap_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// sandbox is a network and mount namespace of the test's own.
type sandbox struct {
	t      *testing.T
	ns     string
	holder *exec.Cmd
}

func requirePrerequisites(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "unshare", "nsenter", "rpcinfo", "showmount", "rpcbind", "nfs-ls")
}

func newSandbox(t *testing.T, name string) *sandbox {
	t.Helper()
	ns := fmt.Sprintf("ovlnfs-pm-%s-%d", name, os.Getpid())
	_ = exec.Command("ip", "netns", "delete", ns).Run() // a leftover of a crashed run of this pid
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	s := &sandbox{t: t, ns: ns}
	t.Cleanup(func() {
		if s.holder != nil {
			_ = s.holder.Process.Kill()
			_ = s.holder.Wait()
		}
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v %s", ns, err, out)
		}
	})
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	s.holder = exec.Command("ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", "mount -t tmpfs tmpfs /run && echo ready && exec sleep 3600")
	out, err := s.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.holder.Stderr = os.Stderr
	if err := s.holder.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("namespace holder: %q %v", line, err)
	}
	return s
}

// prefix runs a command in the sandbox.
func (s *sandbox) prefix() []string {
	return []string{"nsenter", "-t", strconv.Itoa(s.holder.Process.Pid), "-m", "-n"}
}

// run runs a command in the sandbox and returns its combined output.
func (s *sandbox) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	argv := append(append(s.prefix(), name), args...)
	return testenv.Run(ctx, argv[0], argv[1:]...)
}

func (s *sandbox) must(name string, args ...string) string {
	s.t.Helper()
	out, err := s.run(name, args...)
	if err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// start runs ovlnfs serve in the sandbox (testenv stops it at cleanup).
func (s *sandbox) start(bin string, args ...string) *testenv.Server {
	return testenv.StartServer(s.t, bin, s.prefix(), args...)
}

// rpcbind starts the system's rpcbind in the sandbox and stops it at cleanup.
func (s *sandbox) rpcbind() {
	s.t.Helper()
	s.must("mkdir", "-p", "/run/rpcbind")
	cmd := exec.Command(s.prefix()[0], append(s.prefix()[1:], "rpcbind", "-f", "-w")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := s.run("rpcinfo", "-p", "127.0.0.1"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatal("rpcbind did not answer within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// registrations parses `rpcinfo -p`: "prog vers proto port" lines, sorted.
func registrations(out string) []string {
	var lines []string
	re := regexp.MustCompile(`^\s*(\d+)\s+(\d+)\s+(tcp|udp)\s+(\d+)`)
	for _, l := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			lines = append(lines, strings.Join(m[1:], " "))
		}
	}
	sort.Strings(lines)
	return lines
}

func has(list []string, want string) bool {
	for _, l := range list {
		if l == want {
			return true
		}
	}
	return false
}

// exportLayers makes a lower layer with a file and a directory.
func exportLayers(t *testing.T) string {
	root := t.TempDir()
	testenv.WriteFiles(t, root, map[string]string{"lower/hello.txt": "hello over the portmapper\n", "lower/dir/inner.txt": "x\n"})
	return filepath.Join(root, "lower")
}

// checkClients asks the server at host what a client with no port options asks:
// rpcinfo -p and -s, rpcinfo's NULL pings over TCP and UDP (NFS, MOUNT, and the lock
// manager's NLM and NSM on their port), showmount -e, nfs-ls.
func checkClients(t *testing.T, s *sandbox, host string, wantPortmapper bool) {
	t.Helper()
	regs := registrations(s.must("rpcinfo", "-p", host))
	want := []string{"100003 3 tcp 2049", "100005 3 tcp 2049", "100005 3 udp 2049"}
	if wantPortmapper {
		for _, v := range []string{"2", "3", "4"} {
			want = append(want, "100000 "+v+" tcp 111", "100000 "+v+" udp 111")
		}
	}
	for _, w := range want {
		if !has(regs, w) {
			t.Errorf("rpcinfo -p %s lacks %q:\n%s", host, w, strings.Join(regs, "\n"))
		}
	}
	if has(regs, "100003 3 udp 2049") {
		t.Errorf("rpcinfo -p %s lists NFS over UDP, which is not served", host)
	}
	// The lock manager, on a port of its own: NLM 1, 3, 4 and NSM 1, TCP and UDP.
	for _, w := range []string{"100021 1 tcp", "100021 3 tcp", "100021 4 tcp", "100021 1 udp", "100021 3 udp",
		"100021 4 udp", "100024 1 tcp", "100024 1 udp"} {
		if !slices.ContainsFunc(regs, func(r string) bool { return strings.HasPrefix(r, w+" ") && !strings.HasSuffix(r, " 2049") }) {
			t.Errorf("rpcinfo -p %s lacks %q on a port of its own:\n%s", host, w, strings.Join(regs, "\n"))
		}
	}
	for _, ping := range [][]string{{"-t", host, "nfs", "3"}, {"-t", host, "mountd", "3"}, {"-u", host, "mountd", "3"},
		{"-t", host, "nlockmgr", "4"}, {"-u", host, "nlockmgr", "1"}, {"-u", host, "status", "1"}} {
		if out := s.must("rpcinfo", ping...); !strings.Contains(out, "ready and waiting") {
			t.Errorf("rpcinfo %v: %s", ping, out)
		}
	}
	if out, err := s.run("rpcinfo", "-u", host, "nfs", "3"); err == nil {
		t.Errorf("rpcinfo -u %s nfs 3 answered: %s", host, out)
	}
	out := s.must("showmount", "-e", host)
	if !strings.Contains(out, "Export list for "+host+":") || !regexp.MustCompile(`(?m)^/ +\*$`).MatchString(out) {
		t.Errorf("showmount -e %s:\n%s", host, out)
	}
	// libnfs finds the ports through the portmapper when the URL gives none.
	out = s.must("nfs-ls", fmt.Sprintf("nfs://%s/?version=3&auto-traverse-mounts=0", host))
	if !strings.Contains(out, "hello.txt") || !strings.Contains(out, "dir") {
		t.Errorf("nfs-ls without ports:\n%s", out)
	}
}

// TestDefaultPortsOwnPortmapper: as root with no --listen and no --portmap, ovlnfs listens
// on 127.0.0.1:2049 and, no rpcbind running, answers the portmapper on 127.0.0.1:111 itself
// (TCP and UDP); the real clients need no port options. After SIGTERM nothing answers on
// 111. --portmap=off and a port other than 2049 leave 111 alone.
func TestDefaultPortsOwnPortmapper(t *testing.T) {
	requirePrerequisites(t)
	bin := testenv.BuildOvlnfs(t)
	lower := exportLayers(t)
	s := newSandbox(t, "own")
	srv := s.start(bin, "--lowerdir="+lower)
	if !strings.Contains(srv.Log(), `portmap="serve 127.0.0.1:111"`) || !strings.Contains(srv.Log(), "listen=127.0.0.1:2049 mount_udp=127.0.0.1:2049") {
		t.Fatalf("start line:\n%s", srv.Log())
	}
	checkClients(t, s, "127.0.0.1", true)
	if out := s.must("rpcinfo", "-s", "127.0.0.1"); !regexp.MustCompile(`(?m)^\s*100005\s+3\s+udp,tcp\s+mountd\s+ovlnfs$`).MatchString(out) {
		t.Errorf("rpcinfo -s:\n%s", out)
	}
	if code, err := srv.Stop(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("stop: exit %d %v", code, err)
	}
	if out, err := s.run("rpcinfo", "-p", "127.0.0.1"); err == nil {
		t.Errorf("the portmapper still answers after the stop:\n%s", out)
	}

	for _, args := range [][]string{{"--portmap=off"}, {"--listen=127.0.0.1:2050"}} {
		srv := s.start(bin, append([]string{"--lowerdir=" + lower}, args...)...)
		if !regexp.MustCompile(`portmap="?off`).MatchString(srv.Log()) {
			t.Errorf("%v: start line:\n%s", args, srv.Log())
		}
		if out, err := s.run("rpcinfo", "-p", "127.0.0.1"); err == nil {
			t.Errorf("%v: a portmapper answers:\n%s", args, out)
		}
		if code, err := srv.Stop(15 * time.Second); err != nil || code != 0 {
			t.Errorf("%v: stop: exit %d %v", args, code, err)
		}
	}
}

// TestWildcardListen: --listen=0.0.0.0:2049 serves every address of the host, and so does
// the portmapper (0.0.0.0:111): clients reaching the host at a second address get answers
// from that address, and the ports.
func TestWildcardListen(t *testing.T) {
	requirePrerequisites(t)
	bin := testenv.BuildOvlnfs(t)
	lower := exportLayers(t)
	s := newSandbox(t, "any")
	s.must("ip", "addr", "add", "10.213.78.1/32", "dev", "lo")
	srv := s.start(bin, "--lowerdir="+lower, "--listen=0.0.0.0:2049")
	if !regexp.MustCompile(`portmap="serve (0\.0\.0\.0|\[::\]):111"`).MatchString(srv.Log()) {
		t.Fatalf("start line:\n%s", srv.Log())
	}
	for _, host := range []string{"127.0.0.1", "10.213.78.1"} {
		checkClients(t, s, host, true)
	}
}

// TestRegistersWithSystemRpcbind: with rpcbind running, ovlnfs registers NFS 3 (TCP) and
// MOUNT 3 (TCP and UDP) with it instead of answering 111, and SIGTERM removes them again.
// A registration left by a server killed with SIGKILL is taken over by the next one (here
// listening on every address, port 2049 still); a server on another port while that one
// runs is refused (--portmap=register, exit 2) and leaves the registrations alone.
//
// rpcbind answers a lookup with an address of its own choosing on the caller's side (the
// registered port kept), which is why the servers here listen on 127.0.0.1 or on every
// address.
func TestRegistersWithSystemRpcbind(t *testing.T) {
	requirePrerequisites(t)
	bin := testenv.BuildOvlnfs(t)
	lower := exportLayers(t)
	s := newSandbox(t, "rpcb")
	s.rpcbind()
	before := registrations(s.must("rpcinfo", "-p", "127.0.0.1"))

	srv := s.start(bin, "--lowerdir="+lower)
	if !strings.Contains(srv.Log(), `portmap="registered with rpcbind (/run/rpcbind.sock)"`) {
		t.Fatalf("start line:\n%s", srv.Log())
	}
	checkClients(t, s, "127.0.0.1", true)
	if out := s.must("rpcinfo", "-s", "127.0.0.1"); !regexp.MustCompile(`(?m)^\s*100003\s+3\s+tcp\s+nfs\s+superuser$`).MatchString(out) {
		t.Errorf("rpcinfo -s (the owner rpcbind records):\n%s", out)
	}
	if code, err := srv.Stop(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("stop: exit %d %v", code, err)
	}
	if after := registrations(s.must("rpcinfo", "-p", "127.0.0.1")); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("after SIGTERM, rpcinfo -p:\n%s\nwant what rpcbind listed before:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}

	// A server that dies without unregistering.
	crashed := exec.Command(s.prefix()[0], append(s.prefix()[1:], bin, "serve", "--lowerdir="+lower, "--portmap=register")...)
	logPipe, err := crashed.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := crashed.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(logPipe)
	for sc.Scan() && !strings.Contains(sc.Text(), "ovlnfs started") {
	}
	_ = crashed.Process.Kill()
	_ = crashed.Wait()
	if full := s.must("rpcinfo", "127.0.0.1"); !regexp.MustCompile(`100003\s+3\s+tcp\s+127\.0\.0\.1\.8\.1\s+nfs`).MatchString(full) {
		t.Fatalf("the killed server's registration is not there to take over:\n%s", full)
	}
	second := s.start(bin, "--lowerdir="+lower, "--listen=0.0.0.0:2049", "--portmap=register")
	if !strings.Contains(second.Log(), "replacing a stale rpcbind mapping") {
		t.Errorf("no stale mapping replaced:\n%s", second.Log())
	}
	full := s.must("rpcinfo", "127.0.0.1")
	for _, want := range []string{`100003\s+3\s+tcp\s+0\.0\.0\.0\.8\.1\s+nfs`, `100005\s+3\s+udp\s+0\.0\.0\.0\.8\.1\s+mountd`} {
		if !regexp.MustCompile(want).MatchString(full) {
			t.Errorf("rpcinfo 127.0.0.1 lacks %s:\n%s", want, full)
		}
	}
	checkClients(t, s, "127.0.0.1", true)

	// Another server while that one answers: refused, and the registrations stay.
	out, err := s.run(bin, "serve", "--lowerdir="+lower, "--listen=127.0.0.1:2050", "--portmap=register")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(out, "where a server answers") {
		t.Errorf("a second server registering over a live one: %v\n%s", err, out)
	}
	if after := s.must("rpcinfo", "127.0.0.1"); after != full {
		t.Errorf("the refused server changed rpcbind:\n%s\nwas:\n%s", after, full)
	}
	if code, err := second.Stop(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("stop: exit %d %v", code, err)
	}
	if after := registrations(s.must("rpcinfo", "-p", "127.0.0.1")); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("after the second server's SIGTERM, rpcinfo -p:\n%s", strings.Join(after, "\n"))
	}
}
