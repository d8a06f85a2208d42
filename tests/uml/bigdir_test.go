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
//
// The concurrent listing is the one that needs FSINFO's 1 MiB dtpref (cmd/ovlnfs/fsinfo.go):
// with go-nfs's 8 KiB the client restarted its first cache page on every reply and `ls`
// never finished. The server runs with debug logging; its log is kept in the artifacts when
// the test fails (every READDIR page is traced with its cookie and verifier).
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
		"--listen="+serverIP+":"+nfsPort, "--log-level=debug")
	t.Cleanup(func() {
		if t.Failed() {
			_ = os.WriteFile(filepath.Join(artifacts, "server.log"), []byte(server.Log()), 0o644)
		}
	})
	churnDone := make(chan error, 1)
	startChurner(t, ns, helper, artifacts, churnDone)
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
	checkListing := func(t *testing.T, file string, churned bool) {
		names, err := readListing(filepath.Join(artifacts, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if problems := churn.Check(names, fx, churned); len(problems) > 0 {
			t.Errorf("%s (%d names):\n%s", file, len(names), strings.Join(problems, "\n"))
		}
	}
	t.Run("cold", func(t *testing.T) { checkListing(t, "ls-cold.txt", false) })
	t.Run("warm", func(t *testing.T) { checkListing(t, "ls-warm.txt", false) })
	t.Run("concurrent", func(t *testing.T) {
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
		checkListing(t, "ls-concurrent.txt", true)
	})
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

// startChurner runs churnhelper in the namespace; it reports its exit on done and is killed
// at cleanup if still running.
func startChurner(t *testing.T, ns, helper, artifacts string, done chan<- error) {
	churner := exec.Command("ip", "netns", "exec", ns, helper, "-addr", serverIP+":"+nfsPort,
		"-dir", artifacts, "-visible", strconv.Itoa(bigEntries))
	churnLog, err := os.Create(filepath.Join(artifacts, "churnhelper.log"))
	if err != nil {
		t.Fatal(err)
	}
	churner.Stdout, churner.Stderr = churnLog, churnLog
	churner.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := churner.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		err := churner.Wait()
		churnLog.Close()
		close(exited)
		done <- err
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = syscall.Kill(-churner.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
}
