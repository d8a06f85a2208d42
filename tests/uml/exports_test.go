package uml

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// otherIP is a host of the guest's subnet that is not the guest: the only one /other admits.
const otherIP = "10.213.77.3"

// exportsFile is the exports file of TestKernelClientExports, in its three versions: the
// first, the one the first SIGHUP loads (carol added, bob removed, dave's rules no longer
// admitting the guest) and a broken one (a lowers line naming no layer) the second SIGHUP
// is refused.
func exportsFile(root, version string) string {
	ws := func(name, lowers, clients string) string {
		return fmt.Sprintf("export /ws/%s\n    lowers  %s\n    upper   %s\n    work    %s\n    clients %s\n",
			name, lowers, filepath.Join(root, name, "upper"), filepath.Join(root, name, "work"), clients)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# TestKernelClientExports, %s\nlayer top %s\nlayer base %s\n\n", version,
		filepath.Join(root, "lower1"), filepath.Join(root, "lower2"))
	b.WriteString(ws("alice", "top base", guestIP+"(rw)"))
	if version == "first" {
		b.WriteString(ws("bob", "top base", guestIP+"(rw,no_root_squash)"))
		b.WriteString(ws("dave", "top base", guestIP+"(ro) "+otherIP+"(rw)"))
	} else {
		b.WriteString(ws("dave", "top base", otherIP+"(rw)"))
	}
	fmt.Fprintf(&b, "export /other\n    lowers top base\n    upper %s\n    work %s\n    clients %s(rw) 127.0.0.1(rw)\n",
		filepath.Join(root, "other", "upper"), filepath.Join(root, "other", "work"), otherIP)
	b.WriteString("export /base\n    lowers top base\n    clients 10.213.77.0/24(rw)\n")
	switch version {
	case "reload":
		b.WriteString(ws("carol", "top base", guestIP+"(rw)"))
	case "broken":
		b.WriteString(ws("carol", "top nosuchlayer", guestIP+"(rw)"))
	}
	return b.String()
}

// lineOf is the 1-based number of the first line of text that contains s.
func lineOf(text, s string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	return 0
}

// TestKernelClientExports is issue #15's check through the Linux NFS client: one ovlnfs
// serves an exports file (--config) and the UML guest, as root, mounts several exports of
// it (exports-workload.sh):
//
//   - /ws/alice and /ws/bob, two workspaces over the same two lower layers, written at once
//     by two loops and with the same lower file copied up differently: neither sees the
//     other's files, in the client's view or in the other's upper on the host;
//   - root squashing: the guest's root creates a file owned by 65534 in alice (root_squash,
//     the default) and by 0 in bob (no_root_squash), and cannot create in alice's root;
//   - /other admits only another host: mount.nfs is told "access denied by server";
//   - a ro rule (/ws/dave) and an export without upper (/base): writes get EROFS;
//   - SIGHUP with /ws/carol added and /ws/bob removed: "configuration reloaded"; the guest
//     mounts carol; bob's mount, still there, gets ESTALE; dave's, whose rules no longer
//     admit the guest, EACCES (the server answers AUTH_TOOWEAK); a loop writing through
//     alice meanwhile sees no error;
//   - SIGHUP with a file naming an unknown layer: "reload refused" with the file and line;
//     alice and carol go on working.
func TestKernelClientExports(t *testing.T) {
	requirePrerequisites(t)
	testenv.RequireCommands(t, "mount.nfs")
	started := time.Now()
	testsDir, bin, out := workloadDirs(t, "exports")
	for _, f := range []string{"guest.status", "transcript.txt", "ready-reload", "reloaded", "ready-broken", "refused"} {
		os.Remove(filepath.Join(out, f)) // a kept artifacts dir from an earlier run
	}

	root := t.TempDir()
	testenv.WriteFiles(t, root, map[string]string{
		"lower1/top.txt":           "top\n",
		"lower2/shared.txt":        "lower shared\n",
		"lower2/pub/from-base.txt": "from base\n",
	})
	// The squashed root (65534) writes in pub and appends to shared.txt: the lower modes
	// let it, as they would let any user.
	for p, mode := range map[string]os.FileMode{"lower2/pub": 0o777 | os.ModeSticky, "lower2/shared.txt": 0o666} {
		if err := os.Chmod(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, ws := range []string{"alice", "bob", "carol", "dave", "other"} {
		for _, d := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(root, ws, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	config := filepath.Join(root, "exports.conf")
	write := func(version string) string {
		text := exportsFile(root, version)
		// Written beside and renamed, so that a reload never reads half a file.
		if err := os.WriteFile(config+".new", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(config+".new", config); err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(filepath.Join(out, "exports-"+version+".conf"), []byte(text), 0o644)
		return text
	}
	write("first")

	ns := newNetns(t)
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns},
		"--config="+config, "--listen="+serverIP+":"+nfsPort, "--log-level=debug")

	// The host's side of the two reloads, each when the guest asks.
	waitLog := func(from int, msg string) (string, bool) {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			log := server.Log()
			if i := strings.Index(log[from:], msg); i >= 0 {
				end := strings.IndexByte(log[from+i:], '\n')
				if end < 0 {
					end = len(log) - from - i
				}
				return log[from+i : from+i+end], true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return "", false
	}
	var reloadLine, refusedLine, brokenText string
	hostDone := make(chan []string, 1)
	guestDone := make(chan struct{})
	go func() {
		var problems []string
		step := func(ask, answer, version, want string) (string, string, bool) {
			for {
				if _, err := os.Stat(filepath.Join(out, ask)); err == nil {
					break
				}
				select {
				case <-guestDone:
					problems = append(problems, "the guest never wrote "+ask)
					return "", "", false
				case <-time.After(50 * time.Millisecond):
				}
			}
			text := write(version)
			from := len(server.Log())
			if err := server.Signal(syscall.SIGHUP); err != nil {
				problems = append(problems, fmt.Sprintf("SIGHUP: %v", err))
				return "", "", false
			}
			line, ok := waitLog(from, want)
			if !ok {
				problems = append(problems, fmt.Sprintf("no %q in the server log within 20 s of the SIGHUP (%s file)", want, version))
			}
			_ = os.WriteFile(filepath.Join(out, answer), []byte("yes\n"), 0o644)
			return line, text, ok
		}
		var ok bool
		if reloadLine, _, ok = step("ready-reload", "reloaded", "reload", "configuration reloaded"); ok {
			refusedLine, brokenText, _ = step("ready-broken", "refused", "broken", "reload refused")
		}
		hostDone <- problems
	}()

	runGuest(t, ns, testsDir, out, "WORKLOAD=exports-workload.sh", "NOMOUNT=yes")
	close(guestDone)
	for _, p := range <-hostDone {
		t.Error(p)
	}
	stopServer(t, server, filepath.Join(out, "ovlnfs-server.log"))

	transcript, _ := guestResult(t, out)

	t.Run("transcript", func(t *testing.T) { checkExportsTranscript(t, transcript) })
	t.Run("reload-log", func(t *testing.T) {
		t.Logf("reload: %s", reloadLine)
		for _, want := range []string{"/ws/alice", "/ws/carol", "/ws/dave", "/other", "/base (read-only)"} {
			if !strings.Contains(reloadLine, want) {
				t.Errorf("the reload line lacks %s: %s", want, reloadLine)
			}
		}
		if strings.Contains(reloadLine, "/ws/bob") {
			t.Errorf("the reload line still lists /ws/bob: %s", reloadLine)
		}
		if !logHas(server.Log(), "export retired", "export=/ws/bob") {
			t.Error("no log line says /ws/bob was retired")
		}
		// dave's calls after the reload: refused with AUTH_TOOWEAK, not answered.
		if !logHas(server.Log(), "msg=rpc", "call=NFS.", `err="oncrpc: caller not allowed"`) {
			t.Error("no NFS call was refused (AUTH_TOOWEAK) in the server log")
		}
		t.Logf("refused: %s", refusedLine)
		at := fmt.Sprintf("%s:%d:", config, lineOf(brokenText, "lowers  top nosuchlayer"))
		if !strings.Contains(refusedLine, at) || !strings.Contains(refusedLine, "nosuchlayer") {
			t.Errorf("the refusal does not name %s and the layer: %s", at, refusedLine)
		}
	})
	t.Run("uppers", func(t *testing.T) { checkExportsUppers(t, root) })
	t.Logf("whole test took %v", time.Since(started).Round(time.Millisecond))
}

func checkExportsTranscript(t *testing.T, transcript string) {
	lines := map[string]bool{}
	for _, l := range strings.Split(transcript, "\n") {
		lines[l] = true
	}
	for _, want := range []string{
		"mount /ws/alice: ok",
		"mount /ws/bob: ok",
		"mount /ws/dave: ok",
		"mount /base: ok",
		"alice wrote 100",
		"bob wrote 100",
		"alice shared: lower shared alice-change ",
		"bob shared: lower shared bob-change ",
		"alice names in alice: 100",
		"bob names in alice: 0",
		"bob names in bob: 100",
		"alice names in bob: 0",
		"alice contents wrong: 0",
		"bob contents wrong: 0",
		"alice sees lower: from base top",
		"alice rootfile owner: 65534:65534",
		"bob rootfile owner: 0:0",
		"bob root-only create: ok",
		"dave read: lower shared",
		"base read: lower shared",
		"host answered /mnt/reloaded",
		"mount /ws/carol: ok",
		"carol read: carol",
		"carol shared: lower shared ",
		"carol names of others: 0",
		"during went on after the reload",
		"host answered /mnt/refused",
		"during went on after the refused reload",
		"alice after refusal: after",
		"carol after refusal: carol",
		"umount alice: ok",
		"umount carol: ok",
		"umount dave: ok",
		"umount base: ok",
		"umount bob: 0",
		"== done",
	} {
		if !lines[want] {
			t.Errorf("transcript lacks %q", want)
		}
	}
	// Lines whose errors are the point: the start of the line, what the error must say.
	wantLines(t, transcript, map[string]string{
		"alice root-only create: ": "Permission denied",
		"mount /other: exit ":      "access denied by server",
		"dave write: ":             "Read-only file system",
		"dave mkdir: ":             "Read-only file system",
		"dave rm: ":                "Read-only file system",
		// The client's own refusal after ACCESS granted no write bits (see the script).
		"dave append: ":       "Permission denied",
		"base write: ":        "Read-only file system",
		"bob stat: ":          "Stale file handle",
		"bob ls: ":            "Stale file handle",
		"bob create: ":        "Stale file handle",
		"dave refused stat: ": "Permission denied",
		"dave refused ls: ":   "Permission denied",
		"dave refused read: ": "Permission denied",
	})
	if m := regexp.MustCompile(`(?m)^during writes: (\d+)$`).FindStringSubmatch(transcript); m == nil {
		t.Error("the writing loop on alice did not report")
	} else {
		t.Logf("alice's loop wrote and read %s files across the reloads", m[1])
		if !lines["during files: "+m[1]] {
			t.Errorf("alice lists another number of during-* files than the loop wrote (%s)", m[1])
		}
	}
	if strings.Contains(transcript, "FAIL") || strings.Contains(transcript, "mount /other: ok") {
		t.Error("the transcript reports failures (FAIL lines, or /other mounted)")
	}
}

// checkExportsUppers looks at what each workspace wrote on the host: its own files only,
// owned as squashing says, and the lower layers untouched.
func checkExportsUppers(t *testing.T, root string) {
	type want struct {
		content string
		uid     int // -1: any
	}
	expect := map[string]want{
		"alice/upper/shared.txt":        {"lower shared\nalice-change\n", -1},
		"bob/upper/shared.txt":          {"lower shared\nbob-change\n", -1},
		"alice/upper/pub/rootfile":      {"", 65534},
		"bob/upper/pub/rootfile":        {"", 0},
		"bob/upper/rootonly":            {"x\n", 0},
		"alice/upper/pub/alice-7":       {"alice 7\n", 65534},
		"bob/upper/pub/bob-7":           {"bob 7\n", 0},
		"alice/upper/pub/after-refusal": {"after\n", 65534},
		"carol/upper/pub/carol-file":    {"carol\n", 65534},
		"lower2/shared.txt":             {"lower shared\n", -1},
		"alice/upper/pub/during-0":      {"during 0\n", 65534},
		"lower2/pub/from-base.txt":      {"from base\n", -1},
		"lower1/top.txt":                {"top\n", -1},
	}
	for rel, w := range expect {
		p := filepath.Join(root, rel)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if !st.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil || string(b) != w.content {
				t.Errorf("%s: content %q, %v; want %q", rel, b, err, w.content)
			}
		}
		if uid := int(st.Sys().(*syscall.Stat_t).Uid); w.uid >= 0 && uid != w.uid {
			t.Errorf("%s: owner %d, want %d", rel, uid, w.uid)
		}
	}
	// Nothing of one workspace in another's upper, nothing written to the lowers or to
	// the uppers of the exports the guest could not write.
	count := func(dir, pattern string) int {
		m, _ := filepath.Glob(filepath.Join(root, dir, pattern))
		return len(m)
	}
	for _, c := range []struct {
		dir, pattern string
		n            int
	}{
		{"alice/upper/pub", "alice-*", 100},
		{"alice/upper/pub", "bob-*", 0},
		{"bob/upper/pub", "bob-*", 100},
		{"bob/upper/pub", "alice-*", 0},
		{"bob/upper/pub", "during-*", 0},
		{"bob/upper/pub", "after-removal", 0},
		{"carol/upper/pub", "*", 1},
		{"alice/upper", "rootonly", 0},
		{"dave/upper", "*", 0},
		{"other/upper", "*", 0},
		{"lower2/pub", "*", 1},
		{"lower1", "*", 1},
	} {
		if n := count(c.dir, c.pattern); n != c.n {
			t.Errorf("%s/%s: %d entries, want %d", c.dir, c.pattern, n, c.n)
		}
	}
	if n := count("alice/upper/pub", "during-*"); n < 10 {
		t.Errorf("alice's upper holds %d during-* files: the loop across the reloads hardly ran", n)
	}
}
