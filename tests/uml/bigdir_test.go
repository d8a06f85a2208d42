package uml

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/bigdir"
	"github.com/ovlnfs/ovlnfs/tests/internal/churn"
	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// bigEntries is the size of the merged directory the issue asks to list through real clients.
const bigEntries = 100_000

// TestKernelClientListsBigDirectory: the Linux NFS client lists (`ls -f`) a merged directory
// of 100,000 entries spread over two lowers and the upper, with overridden and whited-out
// names. Cold, warm (client caches dropped) and while churnhelper, another NFS client,
// creates and removes entries in it, every name must appear exactly once.
func TestKernelClientListsBigDirectory(t *testing.T) {
	requirePrerequisites(t)
	started := time.Now()
	testsDir := filepath.Join(testenv.RepoRoot(t), "tests", "uml")
	bin := testenv.BuildOvlnfs(t)
	helper := filepath.Join(t.TempDir(), "churnhelper")
	if out, err := exec.Command("go", "build", "-o", helper, filepath.Join(testsDir, "churnhelper")).CombinedOutput(); err != nil {
		t.Fatalf("go build churnhelper: %v\n%s", err, out)
	}
	artifacts := filepath.Join(artifactsDir(t), "bigdir")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, stale := range []string{"churn.start", "churn.running", "churn.stop", "churn.result"} {
		os.Remove(filepath.Join(artifacts, stale)) // a kept artifacts dir from an earlier run
	}
	fx, err := bigdir.Write(t.TempDir(), bigEntries)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fixture written after %v", time.Since(started).Round(time.Millisecond))

	ns := newNetns(t)
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns},
		"--lowerdir="+fx.Lower1+":"+fx.Lower2, "--upperdir="+fx.Upper, "--workdir="+fx.Work,
		"--listen="+serverIP+":"+nfsPort)
	churner := exec.Command("ip", "netns", "exec", ns, helper, "-addr", serverIP+":"+nfsPort,
		"-dir", artifacts, "-visible", strconv.Itoa(bigEntries))
	churnLog, err := os.Create(filepath.Join(artifacts, "churnhelper.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer churnLog.Close()
	churner.Stdout, churner.Stderr = churnLog, churnLog
	churner.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := churner.Start(); err != nil {
		t.Fatal(err)
	}
	churnDone := make(chan error, 1)
	go func() { churnDone <- churner.Wait() }()
	defer func() {
		select {
		case <-churnDone:
		default:
			_ = syscall.Kill(-churner.Process.Pid, syscall.SIGKILL)
			<-churnDone
		}
	}()

	runGuest(t, ns, testsDir, artifacts, "WORKLOAD=bigdir-workload.sh", "MANIFEST=no")
	t.Logf("UML guest run done after %v", time.Since(started).Round(time.Millisecond))
	if code, err := server.Stop(15 * time.Second); err != nil || code != 0 {
		t.Errorf("ovlnfs serve: exit %d, %v", code, err)
	}
	transcript, _ := os.ReadFile(filepath.Join(artifacts, "transcript.txt"))
	t.Logf("guest transcript:\n%s", transcript)
	if status, _ := os.ReadFile(filepath.Join(artifacts, "guest.status")); strings.TrimSpace(string(status)) != "0" {
		guestLog, _ := os.ReadFile(filepath.Join(artifacts, "guest.log"))
		t.Fatalf("guest did not finish (status %q):\n%s", status, guestLog)
	}
	select {
	case err := <-churnDone:
		if err != nil {
			t.Errorf("churnhelper: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("churnhelper did not finish after the guest")
	}
	result, _ := os.ReadFile(filepath.Join(artifacts, "churn.result"))
	t.Logf("churnhelper: %s", result)
	var during int
	for _, line := range strings.Split(string(result), "\n") {
		if v, ok := strings.CutPrefix(line, "changes_after_running "); ok {
			during, _ = strconv.Atoi(v)
		}
	}
	if during < 100 {
		t.Errorf("only %d changes overlapped the concurrent listing; the test proves nothing", during)
	}

	for _, l := range []struct {
		file    string
		churned bool
	}{{"ls-cold.txt", false}, {"ls-warm.txt", false}, {"ls-concurrent.txt", true}} {
		names, err := readListing(filepath.Join(artifacts, l.file))
		if err != nil {
			t.Errorf("%s: %v", l.file, err)
			continue
		}
		if problems := churn.Check(names, fx, l.churned); len(problems) > 0 {
			t.Errorf("%s (%d names):\n%s", l.file, len(names), strings.Join(problems, "\n"))
		}
	}
	t.Logf("whole test took %v", time.Since(started).Round(time.Millisecond))
}

// readListing reads `ls -f` output, leaving out "." and "..".
func readListing(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n := sc.Text(); n != "." && n != ".." {
			names = append(names, n)
		}
	}
	return names, sc.Err()
}
