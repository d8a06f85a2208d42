package uml

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestKernelClientCommit is issue #16's check through the Linux NFS client: one ovlnfs
// serves the workspace /ws (an exports file, two lowers, no_root_squash for the guest) with
// a control socket on the host, and the UML guest (commit-workload.sh) keeps writing to it
// while the host runs the ovlnfs CLI against the socket:
//
//   - a loop creates numbered files, appends to a new log file, appends to a copied-up
//     lower file, writes through an fd held open (O_APPEND) and creates files relative to
//     its cwd, a directory the guest made; the host commits twice meanwhile: the loop sees
//     no error, and afterwards the guest's tree is the tree before plus exactly the loop's
//     writes, and the held fd and the cwd still work;
//   - on the host then: the stack file names both layers, the numbered files are split
//     between layer 1, layer 2 and the upper in the order they were made, the upper holds
//     only what was written after the second commit, and the kernel overlay
//     (lowerdir=LAYER2:LAYER1:lowers, the upper, index=off) shows the guest's tree;
//   - a snapshot, then a directory and a file made and held open (cwd, fd) and a file of
//     the snapshot held open; reset --to the snapshot: the fd, the cwd and the reopened
//     snapshot file (restored, a copy) answer ESTALE, the snapshot's file reads by name,
//     the client goes on (mkdir, write), the fd on the committed file keeps working;
//   - reset to the lowers and committed layers: what the snapshot added is gone, the
//     committed files read as the layers hold them, the client goes on.
func TestKernelClientCommit(t *testing.T) {
	requirePrerequisites(t)
	testenv.RequireCommands(t, "mount.nfs")
	started := time.Now()
	testsDir, bin, out := workloadDirs(t, "commit")
	steps := []guestStep{
		{"ready-commit1", "committed1"}, {"ready-commit2", "committed2"}, {"ready-check", "checked"},
		{"ready-snap", "snapped"}, {"ready-reset1", "reset1"}, {"ready-reset2", "reset2"},
	}
	clearArtifacts(out, []string{"guest.status", "transcript.txt", "before.manifest", "after.manifest", "kernel.manifest"}, steps) // a kept artifacts dir from an earlier run

	root := t.TempDir()
	testenv.WriteFiles(t, root, map[string]string{
		"lower1/top.txt":      "top\n",
		"lower1/cfg/app.conf": "app\n",
		"lower2/base.txt":     "base\n",
		"lower2/shared.txt":   "lower shared\n",
		"lower2/dir/keep.txt": "keep\n",
	})
	upper, work := filepath.Join(root, "upper"), filepath.Join(root, "work")
	layer1, layer2 := filepath.Join(root, "layer1"), filepath.Join(root, "layer2")
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

	// cli runs an ovlnfs command against the control socket, on the host.
	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args = append([]string{args[0], "--control=" + sock}, args[1:]...)
		b, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	// What the host saw after the two commits, for the checks once the guest is done.
	var (
		stackAtCheck         []string
		upperAtCheck, l1, l2 map[string]string
		kernelManifest       string
		kernelErr, stackErr  error
	)
	actions := map[string]func() (string, error){
		"ready-commit1": func() (string, error) { return cli("commit", "/ws", layer1) },
		"ready-commit2": func() (string, error) { return cli("commit", "/ws", layer2) },
		"ready-check": func() (string, error) {
			b, err := os.ReadFile(filepath.Join(work, "ovlnfs-stack"))
			if err == nil {
				err = json.Unmarshal(b, &stackAtCheck)
			}
			stackErr = err
			upperAtCheck, l1, l2 = treeOf(t, upper), treeOf(t, layer1), treeOf(t, layer2)
			kernelManifest, kernelErr = kernelOverlayManifest(testsDir, root,
				[]string{layer2, layer1, filepath.Join(root, "lower1"), filepath.Join(root, "lower2")}, upper)
			_ = os.WriteFile(filepath.Join(out, "kernel.manifest"), []byte(kernelManifest), 0o644)
			return "checked", kernelErr
		},
		"ready-snap":   func() (string, error) { return cli("snapshot", "/ws", "s1") },
		"ready-reset1": func() (string, error) { return cli("reset", "--to=s1", "/ws") },
		"ready-reset2": func() (string, error) { return cli("reset", "/ws") },
	}
	guestDone := make(chan struct{})
	hostDone := answerSteps(out, steps, actions, guestDone)

	runGuest(t, ns, testsDir, out, "WORKLOAD=commit-workload.sh", "NOMOUNT=yes")
	close(guestDone)
	host := <-hostDone
	for _, p := range host[0] {
		t.Error(p)
	}
	for _, o := range host[1] {
		t.Logf("host: %s", o)
	}
	stopServer(t, server, filepath.Join(out, "ovlnfs-server.log"))

	transcript, _ := guestResult(t, out)
	m := regexp.MustCompile(`(?m)^loop iterations: (\d+)$`).FindStringSubmatch(transcript)
	if m == nil {
		t.Fatal("the loop did not report its iterations")
	}
	n, _ := strconv.Atoi(m[1])
	t.Logf("the loop ran %d iterations across the two commits", n)
	if upperAtCheck == nil {
		t.Fatal("the host never looked at the layers (no ready-check)")
	}

	t.Run("loop", func(t *testing.T) { checkCommitLoop(t, transcript, n) })
	t.Run("tree-after-commits", func(t *testing.T) {
		before, after := readManifest(t, filepath.Join(out, "before.manifest")), readManifest(t, filepath.Join(out, "after.manifest"))
		want := expectedAfterLoop(before, n)
		for _, d := range diffManifests(after, want) {
			t.Errorf("guest's tree after the loop vs before plus the loop's writes (\"kernel\" is the expectation): %s", d)
		}
	})
	t.Run("kernel-overlay", func(t *testing.T) {
		if kernelErr != nil {
			t.Fatalf("kernel overlay of the committed layers: %v", kernelErr)
		}
		kernel, err := parseMergedManifest(strings.NewReader(kernelManifest))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range diffManifests(readManifest(t, filepath.Join(out, "after.manifest")), kernel) {
			t.Errorf("guest's tree vs the kernel overlay of LAYER2:LAYER1:lowers: %s", d)
		}
	})
	var vis visibleAfterCommit2
	t.Run("layers", func(t *testing.T) {
		if stackErr != nil || len(stackAtCheck) != 2 || stackAtCheck[0] != layer2 || stackAtCheck[1] != layer1 {
			t.Errorf("WORK/ovlnfs-stack: %q, %v; want [%s %s]", stackAtCheck, stackErr, layer2, layer1)
		}
		vis = checkCommittedLayers(t, l1, l2, upperAtCheck, n)
	})
	t.Run("resets", func(t *testing.T) { checkResetTranscript(t, transcript, n, vis) })
	t.Run("upper-after-resets", func(t *testing.T) {
		final := treeOf(t, upper)
		for _, p := range []string{"snap.txt", "after", "fresh", "log.txt", "loop"} {
			if _, ok := final[p]; ok {
				t.Errorf("the upper holds %s after the reset to the layers", p)
			}
		}
		if final["fresh2/f"] != "x\n" {
			t.Errorf("the upper's fresh2/f after the last reset: %q", final["fresh2/f"])
		}
	})
	if !logHas(server.Log(), "committing a workspace", "export=/ws") || strings.Count(server.Log(), "committing a workspace") != 2 {
		t.Error("the server log does not show two commits of /ws")
	}
	t.Logf("whole test took %v", time.Since(started).Round(time.Millisecond))
}

// treeOf maps each path below dir to its content ("<dir>" for directories, "<TYPE>" for
// other non-files).
func treeOf(t *testing.T, dir string) map[string]string {
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == ".":
		case d.IsDir():
			tree[rel] = "<dir>"
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tree[rel] = string(b)
		default:
			tree[rel] = "<" + d.Type().String() + ">"
		}
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", dir, err)
	}
	return tree
}

// kernelOverlayManifest mounts the layers read-only with the kernel overlay (a fresh
// workdir beside the upper, index off: the index of the upper was emptied by the commits)
// and describes the merged tree with manifest.sh.
func kernelOverlayManifest(testsDir, root string, lowers []string, upper string) (string, error) {
	mnt, kwork := filepath.Join(root, "mnt-kernel"), filepath.Join(root, "kernel-work")
	for _, d := range []string{mnt, kwork} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
	}
	defer os.RemoveAll(kwork)
	opts := fmt.Sprintf("ro,lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=on,index=off,metacopy=off",
		strings.Join(lowers, ":"), upper, kwork)
	if b, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount -o %s: %v %s", opts, err, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	text, err := exec.CommandContext(ctx, "sh", filepath.Join(testsDir, "manifest.sh"), mnt).Output()
	if b, uerr := exec.Command("umount", mnt).CombinedOutput(); uerr != nil {
		return string(text), fmt.Errorf("umount %s: %v %s", mnt, uerr, b)
	}
	if err != nil {
		return string(text), fmt.Errorf("manifest.sh on the kernel overlay: %v", err)
	}
	return string(text), nil
}

// loopLines is n lines of format, numbered from 0: what the loop appended to a file.
func loopLines(format string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, format+"\n", i)
	}
	return b.String()
}

func fileEntry(content string) string {
	h := sha256.Sum256([]byte(content))
	return fmt.Sprintf("f mode=644 owner=0:0 nlink=1 size=%d mtime=recent sha256=%.16s", len(content), hex.EncodeToString(h[:]))
}

func sumOf(content string) string {
	h := sha256.Sum256([]byte(content))
	return hex.EncodeToString(h[:])
}

// expectedAfterLoop is the tree before the loop plus exactly its writes and those after it
// (held end, end.txt).
func expectedAfterLoop(before manifest, n int) manifest {
	want := manifest{}
	for p, e := range before {
		want[p] = e
	}
	for i := 0; i < n; i++ {
		want[fmt.Sprintf("loop/f-%d", i)] = fileEntry(fmt.Sprintf("f %d\n", i))
		want[fmt.Sprintf("cwd/rel-%d", i)] = fileEntry(fmt.Sprintf("rel %d\n", i))
	}
	want["log.txt"] = fileEntry(loopLines("line %d", n))
	want["shared.txt"] = fileEntry("lower shared\n" + loopLines("shared %d", n))
	want["cwd/held.txt"] = fileEntry(loopLines("held %d", n) + "held end\n")
	want["cwd/end.txt"] = fileEntry("end\n")
	// Made before the first commit, the directories are merged ones after it (in both
	// layers and the upper): their link count is 1, as the kernel overlay gives it.
	for _, d := range []string{"loop", "cwd"} {
		want[d] = strings.Replace(want[d], " nlink=2", " nlink=1", 1)
	}
	return want
}

func checkCommitLoop(t *testing.T, transcript string, n int) {
	commits, _, _ := strings.Cut(transcript, "== snapshot")
	if strings.Contains(transcript, "FAIL") || strings.Contains(commits, "Stale") {
		t.Error("the transcript reports failures (FAIL lines, or a stale handle before the resets)")
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(transcript, "\n") {
		lines[l] = true
	}
	for _, want := range []string{
		"mount /ws: ok",
		"host answered committed1: ",
		"host answered committed2: ",
		"the loop went on after both commits",
		"fd 3 after the commits: ok",
		"cwd create after the commits: ok",
		"cwd pwd: /run/ws/cwd",
		fmt.Sprintf("cwd rel files: %d", n),
		fmt.Sprintf("loop files: %d", n),
		"host answered checked: checked",
	} {
		if strings.HasSuffix(want, ": ") {
			if !strings.Contains(transcript, "\n"+want) || !strings.Contains(transcript, want+"/ws committed into") {
				t.Errorf("transcript lacks %q... committed into", want)
			}
			continue
		}
		if !lines[want] {
			t.Errorf("transcript lacks %q", want)
		}
	}
	if n < 30 {
		t.Errorf("the loop ran only %d iterations: too few to have written across both commits", n)
	}
}

// visibleAfterCommit2 is what the committed layers show of the loop's files: what a reset
// to the layers gives back.
type visibleAfterCommit2 struct {
	loopFiles, relFiles, wrongLoop int
	log, shared                    string
}

// indicesOf is the numbers of the layer's files dir/prefix-N.
func indicesOf(tree map[string]string, dir, prefix string) []int {
	var out []int
	for p := range tree {
		if rest, ok := strings.CutPrefix(p, dir+"/"+prefix); ok {
			if i, err := strconv.Atoi(rest); err == nil {
				out = append(out, i)
			}
		}
	}
	sort.Ints(out)
	return out
}

// checkCommittedLayers: the numbered files are split between layer 1, layer 2 and the
// upper in the order the loop made them (one file may straddle a commit: created before,
// written after, it is empty in the lower layer and whole above); the logs of the layers
// are prefixes of the whole; the upper holds only what was written after the second
// commit.
func checkCommittedLayers(t *testing.T, l1, l2, up map[string]string, n int) visibleAfterCommit2 {
	var vis visibleAfterCommit2
	for _, kind := range []struct{ dir, prefix, format string }{{"loop", "f-", "f %d\n"}, {"cwd", "rel-", "rel %d\n"}} {
		layers := []map[string]string{l1, l2, up}
		names := []string{"layer1", "layer2", "upper"}
		seen := map[int]bool{}
		prevMax := -1
		for k, tree := range layers {
			idx := indicesOf(tree, kind.dir, kind.prefix)
			if len(idx) == 0 {
				t.Errorf("%s holds no %s/%s* file: the loop wrote nothing in that phase", names[k], kind.dir, kind.prefix)
				continue
			}
			if idx[0] < prevMax {
				t.Errorf("%s's %s/%s* start at %d, below the layer under it (up to %d)", names[k], kind.dir, kind.prefix, idx[0], prevMax)
			}
			t.Logf("%s: %s/%s%d .. %d (%d files)", names[k], kind.dir, kind.prefix, idx[0], idx[len(idx)-1], len(idx))
			prevMax = idx[len(idx)-1]
			for _, i := range idx {
				seen[i] = true
				p := fmt.Sprintf("%s/%s%d", kind.dir, kind.prefix, i)
				c, whole := tree[p], fmt.Sprintf(kind.format, i)
				if c == whole {
					continue
				}
				// Created before a commit, written after it: whole in the next layer up.
				if c == "" && k < 2 && layers[k+1][p] == whole {
					continue
				}
				t.Errorf("%s: %s holds %q", names[k], p, c)
			}
		}
		if len(seen) != n {
			t.Errorf("the layers hold %d distinct %s/%s* files, the loop made %d", len(seen), kind.dir, kind.prefix, n)
		}
		for i := 0; i < n; i++ {
			if !seen[i] {
				t.Errorf("no layer holds %s/%s%d", kind.dir, kind.prefix, i)
			}
		}
		// What the layers alone show: layer 2 over layer 1.
		visible := 0
		for i := 0; i < n; i++ {
			p := fmt.Sprintf("%s/%s%d", kind.dir, kind.prefix, i)
			c, ok := l2[p]
			if !ok {
				c, ok = l1[p]
			}
			if !ok {
				continue
			}
			visible++
			if kind.dir == "loop" && c != fmt.Sprintf(kind.format, i) {
				vis.wrongLoop++
			}
		}
		if kind.dir == "loop" {
			vis.loopFiles = visible
		} else {
			vis.relFiles = visible
		}
	}
	prefixOf := func(name, content, whole string) {
		if !strings.HasPrefix(whole, content) {
			t.Errorf("%s is no prefix of what the loop wrote: %q", name, content)
		}
	}
	fullLog, fullShared := loopLines("line %d", n), "lower shared\n"+loopLines("shared %d", n)
	prefixOf("layer1/log.txt", l1["log.txt"], l2["log.txt"])
	prefixOf("layer2/log.txt", l2["log.txt"], fullLog)
	prefixOf("layer1/shared.txt", l1["shared.txt"], l2["shared.txt"])
	prefixOf("layer2/shared.txt", l2["shared.txt"], fullShared)
	if len(l2["log.txt"]) <= len(l1["log.txt"]) || len(l1["log.txt"]) == 0 {
		t.Errorf("log.txt: %d bytes in layer1, %d in layer2: the loop did not append in each phase", len(l1["log.txt"]), len(l2["log.txt"]))
	}
	vis.log, vis.shared = l2["log.txt"], l2["shared.txt"]
	// After the loop, through the union.
	for p, want := range map[string]string{
		"log.txt": fullLog, "shared.txt": fullShared, "cwd/held.txt": loopLines("held %d", n) + "held end\n", "cwd/end.txt": "end\n",
	} {
		if up[p] != want {
			t.Errorf("the upper's %s: %q, want %q", p, up[p], want)
		}
	}
	// The upper: only what the loop and the guest wrote after the second commit.
	for p, c := range up {
		switch {
		case p == "loop" || p == "cwd" || p == "log.txt" || p == "shared.txt" || p == "cwd/held.txt" || p == "cwd/end.txt":
		case strings.HasPrefix(p, "loop/f-") || strings.HasPrefix(p, "cwd/rel-"):
		default:
			t.Errorf("the upper holds %s (%q), which nothing wrote after the second commit", p, c)
		}
	}
	for _, p := range []string{"top.txt", "base.txt", "cfg", "dir"} {
		if _, ok := l1[p]; ok {
			t.Errorf("layer1 holds the lowers' %s", p)
		}
	}
	if l1["loop"] != "<dir>" || l1["cwd"] != "<dir>" {
		t.Errorf("layer1 lacks the directories the guest made before the first commit")
	}
	return vis
}

func checkResetTranscript(t *testing.T, transcript string, n int, vis visibleAfterCommit2) {
	lines := map[string]bool{}
	for _, l := range strings.Split(transcript, "\n") {
		lines[l] = true
	}
	for _, want := range []string{
		"host answered snapped: snapshot s1 of /ws taken",
		"fd 5 before: snap",
		"reset1 snap.txt: snap",
		"reset1 fresh: x",
		"reset1 fd 3: ok",
		fmt.Sprintf("reset1 loop files: %d", n),
		"reset1 loop contents wrong: 0",
		"reset1 log.txt: " + sumOf(loopLines("line %d", n)),
		"reset1 shared.txt: " + sumOf("lower shared\n"+loopLines("shared %d", n)),
		"reset2 cwd ls: ok",
		"reset2 fd 3: ok",
		"reset2 fresh2: x",
		fmt.Sprintf("reset2 loop files: %d", vis.loopFiles),
		fmt.Sprintf("reset2 loop contents wrong: %d", vis.wrongLoop),
		fmt.Sprintf("reset2 rel files: %d", vis.relFiles),
		"reset2 log.txt: " + sumOf(vis.log),
		"reset2 shared.txt: " + sumOf(vis.shared),
		"reset2 top.txt: top",
		"umount: ok",
		"== done",
	} {
		if strings.HasPrefix(want, "host answered snapped") {
			if !strings.Contains(transcript, want) {
				t.Errorf("transcript lacks %q", want)
			}
			continue
		}
		if !lines[want] {
			t.Errorf("transcript lacks %q", want)
		}
	}
	for _, w := range []string{"host answered reset1: /ws reset to snapshot s1", "host answered reset2: /ws reset to its lowers"} {
		if !strings.Contains(transcript, w) {
			t.Errorf("transcript lacks %q", w)
		}
	}
	wantLines(t, transcript, map[string]string{
		"reset1 fd 4 write: ":  "Stale file handle",
		"reset1 cwd ls: ":      "Stale file handle",
		"reset1 cwd create: ":  "Stale file handle",
		"reset1 fd 5 reopen: ": "Stale file handle",
		"reset1 after: ":       "No such file or directory",
		"reset2 snap.txt: ":    "No such file or directory",
		"reset2 fresh: ":       "No such file or directory",
	})
}
