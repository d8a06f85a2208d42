package uml

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestKernelClientFlatten is issue #16's `commit --flatten` through the Linux NFS client:
// the UML guest (flatten-workload.sh) changes the workspace (a directory made and stood
// in with a file held open for writing in it, a lower file held open for reading, a
// copy-up, a whiteout, a lower directory renamed and stood in by a second shell) and
// keeps writing while the host runs `ovlnfs commit --flatten`:
//
//   - the guest sees no error: the loop goes on, the held fds, both current directories
//     and the renamed directory work afterwards, and nothing answers "Stale file handle";
//   - on the host: the stack names the flattened layer alone, the layer holds no
//     whiteout and the removed file is not in it, and the kernel overlay with the layer
//     as its only lower (and the upper, which holds what came after) shows the guest's tree.
func TestKernelClientFlatten(t *testing.T) {
	requirePrerequisites(t)
	testenv.RequireCommands(t, "mount.nfs")
	testsDir, bin, out := workloadDirs(t, "flatten")
	steps := []guestStep{{"ready-flatten", "flattened"}, {"ready-check", "checked"}}
	clearArtifacts(out, []string{"guest.status", "transcript.txt", "after.manifest", "kernel.manifest"}, steps) // a kept artifacts dir from an earlier run
	root := t.TempDir()
	testenv.WriteFiles(t, root, map[string]string{
		"lower1/top.txt":       "top\n",
		"lower1/cfg/app.conf":  "app\n",
		"lower2/base.txt":      "base\n",
		"lower2/shared.txt":    "lower shared\n",
		"lower2/dir/keep.txt":  "keep\n",
		"lower2/dir/other.txt": "other\n",
	})
	upper, work, flat := filepath.Join(root, "upper"), filepath.Join(root, "work"), filepath.Join(root, "flat")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	config := filepath.Join(root, "exports.conf")
	text := fmt.Sprintf("layer top %s\nlayer base %s\n\nexport /ws\n    lowers  top base\n    upper   %s\n    work    %s\n    clients %s(rw,no_root_squash)\n",
		filepath.Join(root, "lower1"), filepath.Join(root, "lower2"), upper, work, guestIP)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(root, "control.sock")
	ns := newNetns(t)
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns},
		"--config="+config, "--control="+sock, "--listen="+serverIP+":"+nfsPort, "--log-level=debug")
	var (
		stack struct {
			Layers    []string
			Flattened bool
		}
		stackErr       error
		whiteouts      []string
		kernelManifest string
		kernelErr      error
	)
	actions := map[string]func() (string, error){
		"ready-flatten": func() (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b, err := exec.CommandContext(ctx, bin, "commit", "--control="+sock, "--flatten", "/ws", flat).CombinedOutput()
			return strings.TrimSpace(string(b)), err
		},
		"ready-check": func() (string, error) {
			b, err := os.ReadFile(filepath.Join(work, "ovlnfs-stack"))
			if err == nil {
				err = json.Unmarshal(b, &stack)
			}
			stackErr = err
			_ = filepath.Walk(flat, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode()&os.ModeCharDevice != 0 {
					whiteouts = append(whiteouts, p)
				}
				return nil
			})
			kernelManifest, kernelErr = kernelOverlayManifest(testsDir, root, []string{flat}, upper)
			_ = os.WriteFile(filepath.Join(out, "kernel.manifest"), []byte(kernelManifest), 0o644)
			return "checked", kernelErr
		},
	}
	guestDone := make(chan struct{})
	hostDone := answerSteps(out, steps, actions, guestDone)
	runGuest(t, ns, testsDir, out, "WORKLOAD=flatten-workload.sh", "NOMOUNT=yes")
	close(guestDone)
	host := <-hostDone
	for _, p := range host[0] {
		t.Error(p)
	}
	stopServer(t, server, filepath.Join(out, "ovlnfs-server.log"))
	transcript, _ := guestResult(t, out)
	for _, l := range strings.Split(transcript, "\n") {
		if strings.Contains(l, "FAIL") || strings.Contains(strings.ToLower(l), "stale") {
			t.Errorf("guest: %s", l)
		}
	}
	if m := regexp.MustCompile(`(?m)^loop iterations: (\d+)$`).FindStringSubmatch(transcript); m == nil || m[1] == "0" {
		t.Errorf("the loop did not run across the flatten: %v", m)
	}
	wantLines(t, transcript, map[string]string{
		"host answered flattened: ": "/ws flattened into " + flat,
		"lower cwd after: ":         "app ok /run/ws/cfg2",
		"fd 3 after: ":              "ok",
		"fd 4 after: ":              "base",
		"cwd create after: ":        "ok",
		"cwd pwd: ":                 "/run/ws/made",
		"cwd held: ":                "one two",
		"dir after: ":               "other.txt",
		"root after: ":              "base.txt cfg2 dir made shared.txt top.txt",
		"shared after: ":            "lower shared more",
	})
	if strings.Contains(transcript, "dir after: keep.txt") {
		t.Error("the removed dir/keep.txt is back after the flatten")
	}
	if stackErr != nil || !stack.Flattened || len(stack.Layers) != 1 || stack.Layers[0] != flat {
		t.Errorf("WORK/ovlnfs-stack: %+v, %v; want the flattened layer %s alone", stack, stackErr, flat)
	}
	if len(whiteouts) > 0 {
		t.Errorf("the flattened layer holds character devices (whiteouts): %v", whiteouts)
	}
	if _, err := os.Lstat(filepath.Join(flat, "dir", "keep.txt")); !os.IsNotExist(err) {
		t.Errorf("the flattened layer has dir/keep.txt: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(flat, "cfg2", "app.conf")); err != nil || string(b) != "app\n" {
		t.Errorf("the flattened layer's cfg2/app.conf (a renamed lower directory's file, copied): %q %v", b, err)
	}
	t.Run("kernel-overlay", func(t *testing.T) {
		if kernelErr != nil {
			t.Fatalf("kernel overlay of the flattened layer: %v", kernelErr)
		}
		kernel, err := parseMergedManifest(strings.NewReader(kernelManifest))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range diffManifests(readManifest(t, filepath.Join(out, "after.manifest")), kernel) {
			t.Errorf("guest's tree vs the kernel overlay of the flattened layer alone: %s", d)
		}
	})
	if !logHas(server.Log(), "commit: flattened commit staged", "export=/ws") {
		t.Error("the server log does not show the flattened commit's stage")
	}
}
