package uml

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
	"golang.org/x/sys/unix"
)

// The guest network: a tap in a network namespace the test creates and deletes.
const (
	serverIP = "10.213.77.1"
	guestIP  = "10.213.77.2"
	nfsPort  = "2049"
	tapName  = "ovltap0"
	// umlTimeout bounds one guest run; the issue allows the whole test 5 minutes.
	umlTimeout = 4 * time.Minute
)

var fixtureTime = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

// layers writes the fixture the workload expects (see workload.sh) below root:
// lower1 (top), lower2, upper (with content of its own) and an empty work.
func layers(t *testing.T, root string) {
	type node struct {
		content string // for files
		mode    os.FileMode
		link    string // symlink target
		dir     bool
		hard    string // another name (relative to root) of the file, made after the tree
	}
	f := func(c string) node { return node{content: c, mode: 0o644} }
	tree := map[string]node{
		"lower2/base.txt":             f("base from lower2\n"),
		"lower2/shared/from_l2.txt":   f("from lower2\n"),
		"lower2/shared/both.txt":      f("both: lower2\n"),
		"lower2/tree/a/b/c.txt":       f("c\n"),
		"lower2/tree/a/d.txt":         f("d\n"),
		"lower2/tree/e.txt":           f("e\n"),
		"lower2/movedir/m1.txt":       f("m1\n"),
		"lower2/movedir/sub/m2.txt":   f("m2\n"),
		"lower2/project/main.c":       f("int main(void) { return 0; }\n"),
		"lower2/project/README":       f("a project from a lower layer\n"),
		"lower2/project/src/util.c":   f("int util(void) { return 1; }\n"),
		"lower1/project/src/util.h":   f("int util(void);\n"),
		"lower1/npmpkg/package.json":  f("{\"version\": \"1.0.0\"}\n"),
		"lower2/npmpkg/lib/index.js":  f("module.exports = 1;\n"),
		"lower2/deepdir/a/b/leaf.txt": f("leaf\n"),
		"lower1/deepdir/a/top.txt":    f("top\n"),
		"lower2/cwddir/file.txt":      f("cwd file\n"),
		"lower1/opendir/file.txt":     f("open file\n"),
		"lower2/overdir/keep.txt":     f("over\n"),
		"lower1/emptytarget":          {dir: true, mode: 0o755},
		"lower2/renamesrc/r.txt":      f("r\n"),
		"lower2/hard.txt":             f("hard\n"),
		"lower2/multi.txt":            f("multi\n"),
		"lower2/multi-dir/alias.txt":  {hard: "lower2/multi.txt"},
		"lower2/emptylow":             {dir: true, mode: 0o755},
		"lower2/lowfile.txt":          f("lowfile content\n"),
		"lower1/base.txt":             f("base from lower1\n"),
		"lower1/shared/from_l1.txt":   f("from lower1\n"),
		"lower1/shared/both.txt":      f("both: lower1\n"),
		"lower1/tree/a/f.txt":         f("f\n"),
		"lower1/tree/g.txt":           f("g\n"),
		"lower1/project/Makefile":     f("all:\n\tcc main.c\n"),
		"lower1/link-to-base":         {link: "base.txt"},
		"lower1/cpsrc/x/y.txt":        f("y\n"),
		"lower1/cpsrc/z.txt":          {content: "z\n", mode: 0o600},
		"lower1/cpsrc/exec.sh":        {content: "#!/bin/sh\n", mode: 0o755},
		"lower1/cpsrc/sym":            {link: "z.txt"},
		"lower1/chownme.txt":          f("chown me\n"),
		"upper/upper-only.txt":        f("upper only\n"),
		"upper/upper-only2.txt":       f("upper only 2\n"),
		"upper/shared/from_upper.txt": f("from upper\n"),
		"work":                        {dir: true, mode: 0o755},
	}
	var dirs []string
	for name, n := range tree {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case n.hard != "":
		case n.dir:
			if err := os.MkdirAll(p, n.mode); err != nil {
				t.Fatal(err)
			}
		case n.link != "":
			if err := os.Symlink(n.link, p); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(n.content), n.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, n.mode); err != nil { // not subject to umask
				t.Fatal(err)
			}
		}
	}
	for name, n := range tree {
		if n.hard != "" {
			if err := os.Link(filepath.Join(root, n.hard), filepath.Join(root, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Fixed timestamps, so the comparison can tell preserved times from fresh ones.
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		ts := unix.NsecToTimespec(fixtureTime.UnixNano())
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chtimes(dirs[i], fixtureTime, fixtureTime); err != nil {
			t.Fatal(err)
		}
	}
}

func requirePrerequisites(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "linux.uml", "ip", "mount", "umount", "git", "sha256sum", "find", "xargs")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if _, err := os.Stat("/usr/bin/busybox"); err != nil {
			testenv.Missing(t, "busybox (package busybox-static) not found")
		}
	}
	out, err := exec.Command("linux.uml", "--version").CombinedOutput()
	if err != nil {
		testenv.Missing(t, "linux.uml --version: %v %s", err, out)
	}
	version := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join("/usr/lib/uml/modules", version, "kernel/fs/nfs")); err != nil {
		testenv.Missing(t, "UML NFS modules for %s not found under /usr/lib/uml/modules", version)
	}
	fss, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fss), "overlay") {
		testenv.Missing(t, "the host kernel has no overlay filesystem (the test's oracle)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.Missing(t, "/dev/net/tun not available")
	}
}

// artifactsDir keeps what a red run needs: transcripts, manifests, diffs, logs. It is
// $OVLNFS_ARTIFACTS/uml when set (CI), else a temporary directory kept on failure.
func artifactsDir(t *testing.T) string {
	base := os.Getenv("OVLNFS_ARTIFACTS")
	if base == "" {
		dir, err := os.MkdirTemp("", "ovlnfs-uml-artifacts-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("artifacts kept in %s", dir)
				return
			}
			os.RemoveAll(dir)
		})
		return dir
	}
	dir := filepath.Join(base, "uml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifacts in %s", dir)
	return dir
}

func sh(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := testenv.Run(ctx, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// newNetns creates a network namespace with a tap for the guest and removes both at
// cleanup.
func newNetns(t *testing.T) string {
	ns := fmt.Sprintf("ovlnfs-uml-%d", os.Getpid())
	_ = exec.Command("ip", "netns", "delete", ns).Run() // a leftover of a crashed run of this pid
	sh(t, 10*time.Second, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v %s", ns, err, out)
		}
	})
	in := func(args ...string) { sh(t, 10*time.Second, "ip", append([]string{"netns", "exec", ns}, args...)...) }
	in("ip", "link", "set", "lo", "up")
	in("ip", "tuntap", "add", tapName, "mode", "tap")
	in("ip", "addr", "add", serverIP+"/24", "dev", tapName)
	in("ip", "link", "set", tapName, "up")
	if _, err := exec.LookPath("ethtool"); err == nil {
		// A tap that an earlier vector-transport guest used may keep offloads that make
		// the tuntap guest lose SYN-ACKs; this one is fresh, but be explicit.
		_ = exec.Command("ip", "netns", "exec", ns, "ethtool", "-K", tapName, "tx", "off", "tso", "off").Run()
	}
	return ns
}

// runGuest boots UML in the namespace; the guest mounts the export, runs the workload and
// the manifest and writes them to out.
func runGuest(t *testing.T, ns, testsDir, out string, extraArgs ...string) {
	version := strings.TrimSpace(sh(t, 10*time.Second, "linux.uml", "--version"))
	t.Logf("booting UML %s", version)
	args := []string{"netns", "exec", ns, "linux.uml",
		"mem=384M", "rootfstype=hostfs", "rootflags=/", "ro",
		"init=" + filepath.Join(testsDir, "guest-init.sh"),
		"con=null", "con0=fd:0,fd:1", "eth0=tuntap," + tapName,
		"OUT=" + out, "TESTS=" + testsDir, "PORT=" + nfsPort, "GUEST_IP=" + guestIP,
	}
	// SRV=ADDR among extraArgs mounts from another address of the namespace (a floating
	// one); serverIP otherwise.
	srv := "SRV=" + serverIP
	for _, a := range extraArgs {
		if strings.HasPrefix(a, "SRV=") {
			srv = a
		}
	}
	args = append(args, srv)
	for _, a := range extraArgs {
		if !strings.HasPrefix(a, "SRV=") {
			args = append(args, a)
		}
	}
	cmd := exec.Command("ip", args...)
	console, err := os.Create(filepath.Join(out, "uml-console.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	cmd.Stdout, cmd.Stderr = console, console
	// UML forks helper processes that hold the tap; a process group lets the test kill
	// them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Logf("UML exited: %v", err)
		}
	case <-time.After(umlTimeout):
		t.Errorf("UML guest did not finish within %v", umlTimeout)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	// Whatever UML left behind in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// runOracle runs the workload and manifest on the host over a kernel overlay mount of
// root's layers. Options pin the behaviour ovlnfs follows by default (redirect_dir=on,
// index=on, no metacopy).
func runOracle(t *testing.T, testsDir, root, out string) {
	mnt := filepath.Join(root, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s,redirect_dir=on,index=on,metacopy=off",
		filepath.Join(root, "lower1"), filepath.Join(root, "lower2"), filepath.Join(root, "upper"), filepath.Join(root, "work"))
	sh(t, 10*time.Second, "mount", "-t", "overlay", "overlay", "-o", opts, mnt)
	mounted := true
	defer func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
	}()
	script := fmt.Sprintf("sh %q %q > %q 2>&1; sh %q %q > %q",
		filepath.Join(testsDir, "workload.sh"), mnt, filepath.Join(out, "transcript.txt"),
		filepath.Join(testsDir, "manifest.sh"), mnt, filepath.Join(out, "merged.manifest"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("oracle run: %v %s", err, b)
	}
	sh(t, 10*time.Second, "umount", mnt)
	mounted = false
}

// manifestOfLayers mounts a finished set of layers read-only with the kernel overlay and
// describes the merged tree: what the kernel makes of the upper ovlnfs wrote, with the
// index ovlnfs wrote in its work directory (a read-only mount uses it and writes nothing).
func manifestOfLayers(t *testing.T, testsDir, root, out string) manifest {
	mnt := filepath.Join(root, "mnt-check")
	work := filepath.Join(root, "work")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("ro,lowerdir=%s:%s,upperdir=%s,workdir=%s,redirect_dir=on,index=on,metacopy=off",
		filepath.Join(root, "lower1"), filepath.Join(root, "lower2"), filepath.Join(root, "upper"), work)
	sh(t, 10*time.Second, "mount", "-t", "overlay", "overlay", "-o", opts, mnt)
	defer func() { _ = exec.Command("umount", mnt).Run() }()
	text := sh(t, time.Minute, "sh", filepath.Join(testsDir, "manifest.sh"), mnt)
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := parseMergedManifest(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readManifest(t *testing.T, path string) manifest {
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (see the guest log)", err)
	}
	defer f.Close()
	m, err := parseMergedManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestKernelClientMatchesKernelOverlay is the end-to-end check: the Linux NFS
// client in a UML guest runs workload.sh on the ovlnfs export; the host runs the same
// script on a kernel overlay of an identical copy of the layers; transcripts, the visible
// trees and the upper layers must agree.
func TestKernelClientMatchesKernelOverlay(t *testing.T) {
	requirePrerequisites(t)
	started := time.Now()
	testsDir := filepath.Join(testenv.RepoRoot(t), "tests", "uml")
	bin := testenv.BuildOvlnfs(t)
	artifacts := artifactsDir(t)

	work := t.TempDir()
	ovl, kernel := filepath.Join(work, "ovlnfs"), filepath.Join(work, "kernel")
	layers(t, ovl)
	layers(t, kernel)
	guestOut := filepath.Join(artifacts, "ovlnfs")
	oracleOut := filepath.Join(artifacts, "kernel")
	for _, d := range []string{guestOut, oracleOut} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	runOracle(t, testsDir, kernel, oracleOut)
	t.Logf("kernel overlay run done after %v", time.Since(started).Round(time.Millisecond))

	ns := newNetns(t)
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns},
		"--lowerdir="+filepath.Join(ovl, "lower1")+":"+filepath.Join(ovl, "lower2"),
		"--upperdir="+filepath.Join(ovl, "upper"), "--workdir="+filepath.Join(ovl, "work"),
		"--listen="+serverIP+":"+nfsPort, "--log-level=debug")
	runGuest(t, ns, testsDir, guestOut)
	code, err := server.Stop(15 * time.Second)
	if err := os.WriteFile(filepath.Join(artifacts, "ovlnfs-server.log"), []byte(server.Log()), 0o644); err != nil {
		t.Error(err)
	}
	if err != nil || code != 0 {
		t.Errorf("ovlnfs serve: exit %d, %v", code, err)
	}
	t.Logf("UML guest run done after %v", time.Since(started).Round(time.Millisecond))

	guestLog, _ := os.ReadFile(filepath.Join(guestOut, "guest.log"))
	status, _ := os.ReadFile(filepath.Join(guestOut, "guest.status"))
	if strings.TrimSpace(string(status)) != "0" {
		console, _ := os.ReadFile(filepath.Join(guestOut, "uml-console.txt"))
		t.Fatalf("guest did not finish (status %q)\nguest log:\n%s\nconsole tail:\n%s", status, guestLog, tail(string(console), 3000))
	}

	t.Run("nfsv4-refused", func(t *testing.T) { checkV4Refused(t, guestOut, server.Log()) })
	t.Run("fsync-before-reply", func(t *testing.T) {
		// dd conv=fsync and oflag=sync in the workload: the server must have synced the
		// upper file before answering COMMIT and stable WRITE (it logs that before replying).
		log := server.Log()
		commits := strings.Count(log, `msg="fsync before reply"`)
		if !logHas(log, "fsync before reply", "NFS.COMMIT") {
			t.Errorf("no COMMIT was answered after an fsync (%d fsync lines)", commits)
		}
		t.Logf("%d replies waited for an fsync", commits)
	})
	t.Run("acl-probe-answered", func(t *testing.T) {
		// The guest mounted without noacl; the kernel's NFS_ACL probe must have been told
		// the program is not there (it then stops asking) rather than get PROC_UNAVAIL.
		if !logHas(server.Log(), "prog=100227", "reply=PROG_UNAVAIL") {
			t.Errorf("no NFS_ACL (100227) call answered PROG_UNAVAIL in the server log")
		}
	})

	// Each comparison is a subtest, so the summary names which view diverged; every
	// difference is also written to comparison.txt among the artifacts.
	var report []string
	compare := func(name, heading string, diffs []string) {
		t.Run(name, func(t *testing.T) {
			if len(diffs) == 0 {
				return
			}
			text := heading + "\n" + strings.Join(diffs, "\n") + "\n"
			report = append(report, text)
			t.Errorf("%d differences; artifacts in %s\n%s", len(diffs), artifacts, text)
		})
	}
	gotT, _ := os.ReadFile(filepath.Join(guestOut, "transcript.txt"))
	wantT, _ := os.ReadFile(filepath.Join(oracleOut, "transcript.txt"))
	compare("transcript", "== workload steps whose output differs (ovlnfs over NFS vs kernel overlay):",
		diffTranscripts(string(gotT), string(wantT)))

	oracleMerged := readManifest(t, filepath.Join(oracleOut, "merged.manifest"))
	compare("visible-tree", "== visible tree differs (the NFS client's view vs the kernel overlay):",
		diffManifests(readManifest(t, filepath.Join(guestOut, "merged.manifest")), oracleMerged))

	remount := manifestOfLayers(t, testsDir, ovl, filepath.Join(artifacts, "ovlnfs-layers-under-kernel.manifest"))
	compare("layers-under-kernel", "== the layers ovlnfs wrote, mounted by the kernel overlay, differ from the kernel's own result:",
		diffManifests(remount, oracleMerged))

	gotUpper, err := upperManifest(filepath.Join(ovl, "upper"))
	if err != nil {
		t.Fatal(err)
	}
	wantUpper, err := upperManifest(filepath.Join(kernel, "upper"))
	if err != nil {
		t.Fatal(err)
	}
	compare("upper", "== upper directory differs:", diffManifests(gotUpper, wantUpper))

	if len(report) > 0 {
		_ = os.WriteFile(filepath.Join(artifacts, "comparison.txt"), []byte(strings.Join(report, "\n")), 0o644)
	}
	t.Logf("whole test took %v", time.Since(started).Round(time.Millisecond))
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// checkV4Refused judges the guest's vers=4 mount attempt: mount.nfs falls back to v3 only
// on EPROTONOSUPPORT, which the kernel returns when the server answers PROG_MISMATCH. Any
// other failure (a server that answers v4 calls as v3 ones) stops a default mount.
func checkV4Refused(t *testing.T, guestOut, serverLog string) {
	b, err := os.ReadFile(filepath.Join(guestOut, "v4-mount.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.Contains(got, "Protocol not supported") || strings.Contains(got, "exit status 0") ||
		strings.Contains(got, "still mounted") {
		t.Errorf("vers=4 mount: want a failure with 'Protocol not supported', got:\n%s", got)
	}
	var secs int
	for _, line := range strings.Split(got, "\n") {
		if _, err := fmt.Sscanf(line, "seconds %d", &secs); err == nil && secs > 5 {
			t.Errorf("vers=4 mount took %d s to fail; it should be refused at once", secs)
		}
	}
	if !logHas(serverLog, "prog=100003 vers=4", "reply=PROG_MISMATCH") {
		t.Errorf("no NFSv4 call answered PROG_MISMATCH in the server log")
	}
}

// logHas reports whether one line of the log contains every part.
func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// guestResult is what the guest left in out: its transcript (logged), after checking the
// guest finished (else the test fails with the guest's log and the console's tail); read
// gives any other file of it.
func guestResult(t *testing.T, out string) (transcript string, read func(name string) string) {
	t.Helper()
	read = func(name string) string {
		b, _ := os.ReadFile(filepath.Join(out, name))
		return string(b)
	}
	transcript = read("transcript.txt")
	t.Logf("guest transcript:\n%s", transcript)
	if status := strings.TrimSpace(read("guest.status")); status != "0" {
		t.Fatalf("guest did not finish (status %q)\nguest log:\n%s\nconsole tail:\n%s", status, read("guest.log"), tail(read("uml-console.txt"), 3000))
	}
	return transcript, read
}

// stopServer stops the server, keeps its log at logPath and fails the test unless it
// exited 0.
func stopServer(t *testing.T, s *testenv.Server, logPath string) {
	t.Helper()
	code, err := s.Stop(15 * time.Second)
	_ = os.WriteFile(logPath, []byte(s.Log()), 0o644)
	if err != nil || code != 0 {
		t.Errorf("ovlnfs serve: exit %d, %v", code, err)
	}
}

// wantLines checks that the transcript has, for each prefix, a line starting with it and
// holding the wanted text (the first such line counts).
func wantLines(t *testing.T, transcript string, want map[string]string) {
	t.Helper()
	for prefix, text := range want {
		found := ""
		for _, l := range strings.Split(transcript, "\n") {
			if strings.HasPrefix(l, prefix) {
				found = l
				break
			}
		}
		if !strings.Contains(found, text) {
			t.Errorf("want a line %q...%q, got %q", prefix, text, found)
		}
	}
}
