package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// writeExports writes an exports file into dir and returns its path.
func writeExports(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "exports")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigRefusals: a bad exports file is refused at start with exit status 2 and one
// line naming the file, the line and the reason.
func TestConfigRefusals(t *testing.T) {
	l := newLayout(t)
	head := "layer l1 " + l.l1 + "\nlayer l2 " + l.l2 + "\n"
	for name, c := range map[string]struct{ text, want string }{
		"syntax":         {head + "export /a\n  lowers l1\n  clientz *\n", `exports:5: unknown export directive "clientz"`},
		"unknown layer":  {head + "export /a\n  lowers l3\n  clients *\n", `exports:4: export /a: no layer is named "l3"`},
		"missing lower":  {"layer l " + filepath.Join(l.root, "nope") + "\nexport /a\n  lowers l\n  clients *\n", "exports:2: export /a: lowerdir " + filepath.Join(l.root, "nope") + " does not exist"},
		"upper in lower": {head + "export /a\n  lowers l1\n  upper " + filepath.Join(l.l1, "inner") + "\n  clients *\n", "exports:3: export /a: upperdir " + filepath.Join(l.l1, "inner") + " is inside lowerdir"},
		"options layers": {head + "export /a\n  lowers l1\n  options lowerdir=/x\n  clients *\n", "exports:5: export /a: options lowerdir=/x: the layers are given by"},
		"options value":  {head + "export /a\n  lowers l1\n  options index=maybe\n  clients *\n", "exports:5: export /a: -o index=maybe: must be on or off"},
		"client":         {head + "export /a\n  lowers l1\n  clients server.example(rw)\n", "exports:5: clients: \"server.example(rw)\": host names are not supported"},
		"no exports":     {head, "exports: declares no export"},
	} {
		t.Run(name, func(t *testing.T) {
			p := writeExports(t, t.TempDir(), c.text)
			code, _, stderr := runCLI(t, context.Background(), "serve", "--config="+p, "--listen=127.0.0.1:0")
			if code != exitBadConfig || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", code, stderr, c.want)
			}
		})
	}
	p := writeExports(t, t.TempDir(), head+"export /a\n  lowers l1\n  clients *\n")
	for _, flag := range []string{"--lowerdir=" + l.l1, "-o", "--read-only", "--require-privileged-port"} {
		args := []string{"serve", "--config=" + p, "--listen=127.0.0.1:0", flag}
		if flag == "-o" {
			args = append(args, "index=on")
		}
		code, _, stderr := runCLI(t, context.Background(), args...)
		if code != exitBadConfig || !strings.Contains(stderr, "and --config") {
			t.Errorf("%s with --config: exit %d, %q", flag, code, stderr)
		}
	}
}

// TestConfigServesAndReloads: `serve --config` serves the file's exports; on SIGHUP it
// serves what the file says then, and a file that does not check out changes nothing.
func TestConfigServesAndReloads(t *testing.T) {
	l := newLayout(t)
	dir := t.TempDir()
	for _, d := range []string{"a/upper", "b/upper"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Relative paths are the file's directory's; the workdirs are made beside the uppers.
	head := "layer base " + l.l1 + "\n"
	a := "export /ws/a\n  lowers base\n  upper a/upper\n  clients 127.0.0.1(rw,insecure,no_root_squash)\n"
	b := "export /ws/b\n  lowers base\n  upper b/upper\n  clients 127.0.0.1(rw,insecure,no_root_squash)\n"
	p := writeExports(t, dir, head+a)
	r := startServe(t, "--config="+p, "--listen=127.0.0.1:0", "--portmap=off", "--nlm=off")
	if got := r.field("exports"); got != "/ws/a" {
		t.Errorf("start line: exports %q", got)
	}
	c := rpctest.Dial(t, r.field("listen"))
	aRoot := c.Mount("/ws/a")
	c.Create(aRoot, "made-in-a")
	if _, err := os.Stat(filepath.Join(dir, "a", "upper", "made-in-a")); err != nil {
		t.Errorf("the file is not in a's upper: %v", err)
	}
	if st, _ := c.TryMount("/ws/b"); st != 2 {
		t.Fatalf("MNT /ws/b before the reload: status %d, want 2", st)
	}

	hup := func(want string) {
		t.Helper()
		before := strings.Count(r.log.String(), want)
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Count(r.log.String(), want) == before; {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP:\n%s", want, r.log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	writeExports(t, dir, head+a+b)
	hup("configuration reloaded")
	c.Create(c.Mount("/ws/b"), "made-in-b")
	if _, err := os.Stat(filepath.Join(dir, "b", "upper", "made-in-b")); err != nil {
		t.Errorf("the file is not in b's upper: %v", err)
	}

	writeExports(t, dir, head+a+b+"export /ws/c\n  lowers nope\n  clients *\n")
	hup("reload refused")
	if !strings.Contains(r.log.String(), `exports:11: export /ws/c: no layer is named \"nope\"`) {
		t.Errorf("the refusal does not name the line:\n%s", r.log.String())
	}
	if a := c.Getattr(aRoot); a.Ftype != 2 {
		t.Errorf("/ws/a after a refused reload: %+v", a)
	}
	c.Mount("/ws/b")
	if st, _ := c.TryMount("/ws/c"); st != 2 {
		t.Errorf("MNT /ws/c of the refused file: status %d, want 2", st)
	}
}
