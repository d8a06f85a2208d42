package uml

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestKernelClientSurvivesServerRestart: the Linux NFS client holds an open file, an
// appending file and a working directory, and runs a `cp -a`, while the server is stopped
// with SIGTERM and started again; nothing it holds goes stale and the copy completes.
func TestKernelClientSurvivesServerRestart(t *testing.T) {
	requirePrerequisites(t)
	testsDir, bin, out := workloadDirs(t, "restart")
	for _, f := range []string{"ready", "restarted", "guest.status", "transcript.txt"} {
		os.Remove(filepath.Join(out, f))
	}
	root := t.TempDir()
	lower, upper, work := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work")
	big := make([]byte, 1<<20+6)
	copy(big[len(big)-6:], "theend")
	files := map[string][]byte{"lower/big.bin": big, "held/log.txt": []byte("from the lower layer\n"), "held/inside/a": []byte("a")}
	// The tree cp copies: lower and upper parts, big enough to take a few seconds.
	for i := 0; i < 40; i++ {
		for j := 0; j < 40; j++ {
			layer := lower
			if (i+j)%3 == 0 {
				layer = upper
			}
			rel, _ := filepath.Rel(root, layer)
			files[fmt.Sprintf("%s/tree/d%02d/f%02d", rel, i, j)] = []byte(strings.Repeat(fmt.Sprintf("%d-%d ", i, j), 200))
		}
	}
	for name, content := range files {
		if !strings.HasPrefix(name, "lower/") && !strings.HasPrefix(name, "upper/") {
			name = "lower/" + name
		}
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(upper, 0o755)
	os.MkdirAll(work, 0o755)

	ns := newNetns(t)
	args := []string{"--lowerdir=" + lower, "--upperdir=" + upper, "--workdir=" + work,
		"--listen=" + serverIP + ":" + nfsPort, "--log-level=debug"}
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns}, args...)
	restarted := make(chan string, 1)
	guestDone := make(chan struct{})
	go func() {
		for {
			select {
			case <-guestDone:
				restarted <- "guest never asked for the restart"
				return
			default:
			}
			if _, err := os.Stat(filepath.Join(out, "ready")); err == nil {
				code, err := server.Stop(15 * time.Second)
				log1 := server.Log()
				time.Sleep(time.Second) // the client notices the server is gone
				server = testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns}, args...)
				os.WriteFile(filepath.Join(out, "restarted"), []byte("yes\n"), 0o644)
				restarted <- fmt.Sprintf("first server exit %d %v\n%s", code, err, log1)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// timeo=10: the client retries after a second instead of a minute.
	runGuest(t, ns, testsDir, out, "WORKLOAD=restart-workload.sh", "NFSOPTS=timeo=10,actimeo=1")
	close(guestDone)
	first := <-restarted
	os.WriteFile(filepath.Join(out, "ovlnfs-server-1.log"), []byte(first), 0o644)
	os.WriteFile(filepath.Join(out, "ovlnfs-server-2.log"), []byte(server.Log()), 0o644)

	transcript, _ := os.ReadFile(filepath.Join(out, "transcript.txt"))
	status, _ := os.ReadFile(filepath.Join(out, "guest.status"))
	t.Logf("guest transcript:\n%s", transcript)
	if strings.TrimSpace(string(status)) != "0" {
		guestLog, _ := os.ReadFile(filepath.Join(out, "guest.log"))
		t.Fatalf("guest did not finish (status %q):\n%s", status, guestLog)
	}
	tr := string(transcript)
	for _, want := range []string{"== after restart", "ls: a ", "read: theend", "append ok",
		"cat log: from the lower layer before-restart after-restart", "create in held dir ok",
		"cp exit status 0", "copy compares equal", "files in copy: 1641 of 1641"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	for _, bad := range []string{"Stale", "stale", "FAIL"} {
		if strings.Contains(tr, bad) {
			t.Errorf("transcript contains %q", bad)
		}
	}
	if !strings.Contains(first, "exit 0") {
		t.Errorf("first server did not stop cleanly: %s", first[:min(len(first), 200)])
	}
}
