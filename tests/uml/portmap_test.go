package uml

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestKernelClientMountsWithoutPortOptions: ovlnfs, as root on port 2049 with no --portmap
// flag, answers the portmapper on port 111 of its address in the test's network namespace;
// the UML guest, another host on the tap, asks it with rpcinfo -p and showmount -e and
// mounts with `mount -t nfs -o vers=3,nolock SERVER:/ /mnt` (no port, mountport, proto or
// mountproto), then reads, writes and renames through the mount.
func TestKernelClientMountsWithoutPortOptions(t *testing.T) {
	requirePrerequisites(t)
	testenv.RequireCommands(t, "rpcinfo", "showmount", "mount.nfs")
	testsDir, bin, out := workloadDirs(t, "portmap")
	for _, f := range []string{"guest.status", "transcript.txt", "rpcinfo.txt", "showmount.txt", "mount-options.txt"} {
		os.Remove(filepath.Join(out, f)) // a kept artifacts dir from an earlier run
	}
	root := t.TempDir()
	testenv.WriteFiles(t, root, map[string]string{"lower/hello.txt": "hello from the lower layer\n"})
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	ns := newNetns(t)
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns},
		"--lowerdir="+filepath.Join(root, "lower"), "--upperdir="+filepath.Join(root, "upper"),
		"--workdir="+filepath.Join(root, "work"), "--listen="+serverIP+":"+nfsPort, "--log-level=debug")
	if want := `portmap="serve ` + serverIP + `:111"`; !strings.Contains(server.Log(), want) {
		t.Fatalf("start line lacks %s:\n%s", want, server.Log())
	}
	runGuest(t, ns, testsDir, out, "WORKLOAD=portmap-workload.sh", "MANIFEST=no", "PLAINMOUNT=yes")
	stopServer(t, server, filepath.Join(out, "ovlnfs-server.log"))
	_, read := guestResult(t, out)
	rpcinfo := read("rpcinfo.txt")
	for _, want := range []string{
		`(?m)^\s*100000\s+2\s+tcp\s+111\s+portmapper$`, `(?m)^\s*100000\s+2\s+udp\s+111\s+portmapper$`,
		`(?m)^\s*100003\s+3\s+tcp\s+2049\s+nfs$`,
		`(?m)^\s*100005\s+3\s+tcp\s+2049\s+mountd$`, `(?m)^\s*100005\s+3\s+udp\s+2049\s+mountd$`,
		`(?m)^exit status 0$`,
	} {
		if !regexp.MustCompile(want).MatchString(rpcinfo) {
			t.Errorf("the guest's rpcinfo -p %s lacks %s:\n%s", serverIP, want, rpcinfo)
		}
	}
	if sm := read("showmount.txt"); !regexp.MustCompile(`(?m)^/ +\*$`).MatchString(sm) || !strings.Contains(sm, "exit status 0") {
		t.Errorf("the guest's showmount -e %s:\n%s", serverIP, sm)
	}
	// What mount.nfs found for the kernel: NFS on 2049 over TCP (the kernel shows no port=
	// for the default one), MOUNT on 2049 over UDP, which mount.nfs asks the portmapper
	// for first.
	opts := read("mount-options.txt")
	t.Logf("guest mount: %s", strings.TrimSpace(opts))
	for _, want := range []string{",vers=3,", ",proto=tcp,", ",mountport=2049,", ",mountproto=udp,", ",nolock,"} {
		if !strings.Contains(opts, want) {
			t.Errorf("the guest's mount lacks %s: %s", strings.Trim(want, ","), opts)
		}
	}
	if m := regexp.MustCompile(`,port=(\d+)`).FindStringSubmatch(opts); m != nil && m[1] != "2049" {
		t.Errorf("the guest's mount uses NFS port %s", m[1])
	}
	transcript := read("transcript.txt")
	for _, want := range []string{"hello.txt", "hello from the lower layer", "written through a mount found by the portmapper\nmore", "renamed.txt", "== done"} {
		if !strings.Contains(transcript, want) {
			t.Errorf("transcript lacks %q:\n%s", want, transcript)
		}
	}
	got, err := os.ReadFile(filepath.Join(root, "upper", "renamed.txt"))
	if err != nil || string(got) != "written through a mount found by the portmapper\nmore\n" {
		t.Errorf("upper/renamed.txt: %q %v", got, err)
	}
	// The guest found the ports through this server's portmapper, and mounted over MOUNT.
	log := server.Log()
	if !logHas(log, "call=PMAP2.GETPORT") && !logHas(log, "call=RPCB4.GETADDR") && !logHas(log, "call=RPCB3.GETADDR") {
		t.Error("the server log has no portmapper lookup")
	}
	if !logHas(log, "call=MOUNT.MNT") {
		t.Error("the server log has no MOUNT.MNT")
	}
}
