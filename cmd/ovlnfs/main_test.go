package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

func TestSplitEscaped(t *testing.T) {
	got := splitEscaped(`lowerdir=/a\:b:/c\,d,upperdir=/u\,v,workdir=/w`, ',')
	want := []string{`lowerdir=/a\:b:/c\,d`, `upperdir=/u\,v`, `workdir=/w`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("splitEscaped = %q, want %q", got, want)
	}
}

func TestParseMountOptions(t *testing.T) {
	mo, err := parseMountOptions(`lowerdir=/l\:1:/l\,2,upperdir=/u\,x,workdir=/w\:y,userxattr`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/l:1", "/l,2"}; !reflect.DeepEqual(mo.lowers, want) {
		t.Errorf("lowers = %q, want %q", mo.lowers, want)
	}
	if mo.upper != "/u,x" || mo.work != "/w:y" || mo.xattrPrefix != "user.overlay." {
		t.Errorf("got %+v", mo)
	}
	if _, err := parseMountOptions("lowerdir=/a,metacopy=on"); err == nil {
		t.Errorf("unsupported option accepted")
	}
	for _, v := range []string{"on", "off"} {
		if mo, err := parseMountOptions("lowerdir=/a,index=" + v); err != nil || mo.index != v {
			t.Errorf("index=%s: %+v, %v", v, mo, err)
		}
	}
	for _, bad := range []string{"index", "index=", "index=yes", "index=ON"} {
		if _, err := parseMountOptions("lowerdir=/a," + bad); err == nil {
			t.Errorf("-o %s accepted", bad)
		}
	}
	for _, v := range []string{"on", "follow", "nofollow", "off"} {
		if mo, err := parseMountOptions("lowerdir=/a,redirect_dir=" + v); err != nil || mo.redirectDir != v {
			t.Errorf("redirect_dir=%s: %+v, %v", v, mo, err)
		}
	}
	for _, bad := range []string{"redirect_dir", "redirect_dir=", "redirect_dir=yes", "redirect_dir=ON"} {
		if _, err := parseMountOptions("lowerdir=/a," + bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

type layout struct{ root, l1, l2, upper, work string }

func newLayout(t *testing.T) layout {
	root := t.TempDir()
	l := layout{root: root, l1: filepath.Join(root, "l1"), l2: filepath.Join(root, "l2"),
		upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work")}
	for _, d := range []string{l.l1, l.l2, l.upper, l.work, filepath.Join(l.l1, "inner"), filepath.Join(l.upper, "wsub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func runCLI(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRefusals(t *testing.T) {
	l := newLayout(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	otherFS := "/dev/shm" // tmpfs, unlike t.TempDir() on the machines this runs on
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing lower", []string{"--lowerdir=" + l.l1 + ":" + l.root + "/nope"}, "does not exist"},
		{"missing upper", []string{"--lowerdir=" + l.l1, "--upperdir=" + l.root + "/nope"}, "does not exist"},
		{"upper inside lower", []string{"--lowerdir=" + l.l1, "--upperdir=" + l.l1 + "/inner"}, "inside lowerdir"},
		{"lower inside upper", []string{"--lowerdir=" + l.l1 + "/inner", "--upperdir=" + l.l1}, "inside upperdir"},
		{"workdir on another filesystem", []string{"--lowerdir=" + l.l1, "--upperdir=" + l.upper, "--workdir=" + otherFS}, "not on the same filesystem"},
		{"workdir inside upper", []string{"--lowerdir=" + l.l1, "--upperdir=" + l.upper, "--workdir=" + l.upper + "/wsub"}, "overlap"},
		{"port in use", []string{"--lowerdir=" + l.l1, "--listen=" + busy.Addr().String()}, "address already in use"},
		{"no lower", []string{"--upperdir=" + l.upper}, "no lower layer"},
		{"both ways", []string{"--lowerdir=" + l.l1, "-o", "lowerdir=" + l.l2}, "both"},
		{"bad option", []string{"-o", "lowerdir=" + l.l1 + ",nfs_export=on"}, "not supported"},
		{"bad redirect_dir", []string{"-o", "lowerdir=" + l.l1 + ",redirect_dir=yes"}, "redirect_dir"},
		{"userxattr with redirects", []string{"-o", "lowerdir=" + l.l1 + ",userxattr,redirect_dir=on"}, "conflicting options"},
	}
	if st, err := os.Stat(otherFS); err != nil || !st.IsDir() {
		t.Logf("no %s here; the other-filesystem case is skipped", otherFS)
		cases = append(cases[:4:4], cases[5:]...)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, context.Background(), append([]string{"serve"}, c.args...)...)
			if code != exitBadConfig {
				t.Errorf("exit status %d, want %d", code, exitBadConfig)
			}
			if !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("stderr %q: want one line mentioning %q", stderr, c.want)
			}
		})
	}
	// Nothing was created: no default workdir beside the upper, no lock file.
	entries, _ := os.ReadDir(l.root)
	for _, e := range entries {
		if strings.Contains(e.Name(), "ovlnfs-work") {
			t.Errorf("a refused start created %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(l.work, server.LockFileName)); err == nil {
		t.Errorf("a refused start created the lock file")
	}
}

func TestWorkdirInUse(t *testing.T) {
	l := newLayout(t)
	// Another process's lock: a flock on the lock file from another open file.
	f, err := os.OpenFile(filepath.Join(l.work, server.LockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, context.Background(), "serve", "--lowerdir="+l.l1, "--upperdir="+l.upper,
		"--workdir="+l.work, "--listen=127.0.0.1:0")
	if code != exitBadConfig || !strings.Contains(stderr, "in use") {
		t.Errorf("exit %d, stderr %q; want 2 and 'in use'", code, stderr)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}} {
		code, stdout, _ := runCLI(t, context.Background(), args...)
		if code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
		for _, want := range []string{"mount -t nfs -o vers=3", "macOS", "--lowerdir"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%v: help lacks %q", args, want)
			}
		}
	}
	code, stdout, _ := runCLI(t, context.Background(), "serve", "--help")
	for _, flag := range []string{"-lowerdir", "-upperdir", "-workdir", "-o", "-read-only", "-listen", "-log-format", "-log-level"} {
		if code != exitOK || !strings.Contains(stdout, flag) {
			t.Errorf("serve --help does not explain %s", flag)
		}
	}
}

// TestServeStopsOnSignal runs the server in-process and cancels its context, as
// SIGINT/SIGTERM do in main, with the default workdir.
func TestServeStopsOnSignal(t *testing.T) {
	l := newLayout(t)
	ctx, cancel := context.WithCancel(context.Background())
	port := freePort(t)
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--lowerdir=" + l.l1 + ":" + l.l2, "--upperdir=" + l.upper,
			"--listen=" + port, "--log-format=json"}, &bytes.Buffer{}, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", port)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never listened: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit status %d, want 0\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
	log := stderr.String()
	for _, want := range []string{`"msg":"ovlnfs started"`, `"msg":"ovlnfs stopping"`, `"msg":"ovlnfs stopped"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	if _, err := os.Stat(filepath.Join(l.root, ".upper.ovlnfs-work", server.LockFileName)); err != nil {
		t.Errorf("default workdir beside the upper: %v", err)
	}
}

// freePort is 127.0.0.1 and a port free for TCP and UDP (MOUNT is served on both).
func freePort(t *testing.T) string {
	for try := 0; ; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
		if try == 20 {
			t.Fatalf("no port free for both TCP and UDP: %v", err)
		}
	}
}

func TestDirCacheEntries(t *testing.T) {
	l := newLayout(t)
	for _, bad := range []string{"0", "-3", "many", "1.5", "2000000", ""} {
		for _, args := range [][]string{
			{"--lowerdir=" + l.l1, "--dircache-entries=" + bad},
			{"-o", "lowerdir=" + l.l1 + ",dircache_entries=" + bad},
		} {
			code, _, stderr := runCLI(t, context.Background(), append([]string{"serve"}, args...)...)
			if code != exitBadConfig || !strings.Contains(stderr, "dircache") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("%q: exit %d, stderr %q; want 2 and one line naming dircache", args, code, stderr)
			}
		}
	}
	code, _, stderr := runCLI(t, context.Background(), "serve", "--lowerdir="+l.l1, "--dircache-entries=5", "-o", "dircache_entries=6")
	if code != exitBadConfig || !strings.Contains(stderr, "both") {
		t.Errorf("given both ways: exit %d, stderr %q", code, stderr)
	}
	for _, args := range [][]string{
		{"--lowerdir=" + l.l1, "--dircache-entries=5000"},
		{"-o", "lowerdir=" + l.l1 + ",dircache_entries=5000"},
	} {
		cfg, err := parseServeArgs(args, io.Discard)
		if err != nil || cfg.dirCacheEntries != 5000 {
			t.Errorf("%q: %+v, %v; want dirCacheEntries 5000", args, cfg, err)
		}
	}
	if cfg, err := parseServeArgs([]string{"--lowerdir=" + l.l1}, io.Discard); err != nil || cfg.dirCacheEntries != 0 {
		t.Errorf("default: %+v, %v; want 0 (the union's default)", cfg, err)
	}
}

// --require-privileged-port reaches the server's configuration; off by default (macOS
// mounts from unprivileged ports unless given resvport).
func TestRequirePrivilegedPort(t *testing.T) {
	l := newLayout(t)
	for args, want := range map[string]bool{"": false, "--require-privileged-port": true, "--require-privileged-port=false": false} {
		argv := []string{"--lowerdir=" + l.l1}
		if args != "" {
			argv = append(argv, args)
		}
		cfg, err := parseServeArgs(argv, io.Discard)
		if err != nil || cfg.requirePrivilegedPort != want {
			t.Errorf("%q: %+v, %v; want requirePrivilegedPort %v", argv, cfg, err, want)
		}
	}
}

// -o appledouble=allow|refuse: refuse reaches the configuration, other values are refused.
// TestUnicodeOption: -o unicode= takes exact or insensitive and refuses anything else
// with exit status 2, naming the option.
func TestUnicodeOption(t *testing.T) {
	l := newLayout(t)
	for opt, want := range map[string]string{"": "", ",unicode=exact": "exact", ",unicode=insensitive": "insensitive"} {
		cfg, err := parseServeArgs([]string{"-o", "lowerdir=" + l.l1 + opt}, io.Discard)
		if err != nil || cfg.unicode != want {
			t.Errorf("%q: %+v, %v; want unicode %q", opt, cfg, err, want)
		}
	}
	for _, bad := range []string{"nfc", "", "NFD"} {
		code, _, stderr := runCLI(t, context.Background(), "serve", "-o", "lowerdir="+l.l1+",unicode="+bad)
		if code != exitBadConfig || !strings.Contains(stderr, "unicode") {
			t.Errorf("unicode=%q: exit %d, stderr %q; want 2 naming unicode", bad, code, stderr)
		}
	}
}

// TestGomaxprocsFlag: --gomaxprocs takes auto (the default, 0 in the config) or a count,
// and refuses anything else with exit status 2.
func TestGomaxprocsFlag(t *testing.T) {
	l := newLayout(t)
	for flagValue, want := range map[string]int{"": 0, "auto": 0, "1": 1, "16": 16} {
		args := []string{"--lowerdir=" + l.l1}
		if flagValue != "" {
			args = append(args, "--gomaxprocs="+flagValue)
		}
		cfg, err := parseServeArgs(args, io.Discard)
		if err != nil || cfg.gomaxprocs != want {
			t.Errorf("--gomaxprocs=%q: %+v, %v; want %d", flagValue, cfg, err, want)
		}
	}
	for _, bad := range []string{"0", "-1", "two", "", "99999"} {
		code, _, stderr := runCLI(t, context.Background(), "serve", "--lowerdir="+l.l1, "--gomaxprocs="+bad)
		if code != exitBadConfig || !strings.Contains(stderr, "gomaxprocs") {
			t.Errorf("--gomaxprocs=%q: exit %d, stderr %q; want 2 naming the flag", bad, code, stderr)
		}
	}
}

func TestAppleDoubleOption(t *testing.T) {
	l := newLayout(t)
	for opt, want := range map[string]bool{"": false, ",appledouble=allow": false, ",appledouble=refuse": true} {
		cfg, err := parseServeArgs([]string{"-o", "lowerdir=" + l.l1 + opt}, io.Discard)
		if err != nil || cfg.refuseAppleDouble != want {
			t.Errorf("%q: %+v, %v; want refuseAppleDouble %v", opt, cfg, err, want)
		}
	}
	for _, bad := range []string{"hide", "", "yes"} {
		code, _, stderr := runCLI(t, context.Background(), "serve", "-o", "lowerdir="+l.l1+",appledouble="+bad)
		if code != exitBadConfig || !strings.Contains(stderr, "appledouble") {
			t.Errorf("appledouble=%q: exit %d, stderr %q; want 2 naming appledouble", bad, code, stderr)
		}
	}
}

// TestIndexMismatchRefused: an upper and workdir used with index=on (the
// default) and other lower layers are refused at start in one line, as the
// kernel refuses the mount; -o index=off starts.
func TestIndexMismatchRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (trusted.overlay xattrs)")
		}
		t.Skip("needs root (trusted.overlay xattrs)")
	}
	l := newLayout(t)
	u, err := billyunion.New(billyunion.Options{Lowers: []string{l.l1}, Upper: l.upper, Work: l.work})
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	code, _, stderr := runCLI(t, context.Background(), "serve", "--listen=127.0.0.1:0", "--portmap=off", "--nlm=off", "-o", "lowerdir="+l.l2+",upperdir="+l.upper+",workdir="+l.work)
	if code != exitBadConfig || !strings.Contains(stderr, "origin does not match") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q: want %d and one line about the origin", code, stderr, exitBadConfig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	code, _, stderr = runCLI(t, ctx, "serve", "--listen=127.0.0.1:0", "--portmap=off", "--nlm=off", "-o", "lowerdir="+l.l2+",upperdir="+l.upper+",workdir="+l.work+",index=off")
	if code == exitBadConfig {
		t.Fatalf("index=off refused: %s", stderr)
	}
}
