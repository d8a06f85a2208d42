// Package libnfs_test drives a real `ovlnfs serve` process with the libnfs command-line
// clients (nfs-ls, nfs-cat, nfs-cp) over 127.0.0.1.
package libnfs_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// layers builds two lowers and an upper:
//
//	upper:  top.txt("upper")           dir/u.txt
//	lower1: top.txt("lower1")  only1.txt  dir/one.txt
//	lower2: top.txt("lower2")  only2.txt  dir/two.txt  deep/er/file.txt
func layers(t *testing.T) (lower1, lower2, upper, work string) {
	root := t.TempDir()
	files := map[string]string{
		"upper/top.txt":               "upper\n",
		"upper/dir/u.txt":             "u\n",
		"lower1/top.txt":              "lower1\n",
		"lower1/only1.txt":            "only in lower1\n",
		"lower1/dir/one.txt":          "one\n",
		"lower2/top.txt":              "lower2\n",
		"lower2/only2.txt":            "only in lower2\n",
		"lower2/dir/two.txt":          "two\n",
		"lower2/deep/er/file.txt":     "deep file\n",
		"lower2/deep/er/another.data": strings.Repeat("0123456789abcdef", 65536), // 1 MiB: several READs
	}
	testenv.WriteFiles(t, root, files)
	work = filepath.Join(root, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "lower1"), filepath.Join(root, "lower2"), filepath.Join(root, "upper"), work
}

type client struct {
	t    *testing.T
	port int
}

// url names path in the export. libnfs mounts the URL's directory part, so a path in the
// export root needs the double slash ("//name").
func (c client) url(path string) string {
	if !strings.Contains(strings.TrimPrefix(path, "/"), "/") && path != "/" {
		path = "/" + path
	}
	return fmt.Sprintf("nfs://127.0.0.1%s?version=3&nfsport=%d&mountport=%d&auto-traverse-mounts=0", path, c.port, c.port)
}

func (c client) run(name string, args ...string) (string, error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	c.t.Logf("$ %s %s\n%s", name, strings.Join(args, " "), limit(string(out)))
	return string(out), err
}

func limit(s string) string {
	if len(s) > 400 {
		return s[:400] + "...(truncated)"
	}
	return s
}

// names returns the entry names nfs-ls printed (the last field of each line).
func names(listing string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			out = append(out, f[len(f)-1])
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func startServer(t *testing.T, readOnly bool) (client, string) {
	testenv.RequireCommands(t, "nfs-ls", "nfs-cat", "nfs-cp")
	bin := testenv.BuildOvlnfs(t)
	l1, l2, upper, work := layers(t)
	port := testenv.FreePort(t)
	args := []string{"--lowerdir=" + l1 + ":" + l2, "--listen=" + fmt.Sprintf("127.0.0.1:%d", port)}
	if readOnly {
		args = append(args, "--read-only", "--upperdir="+upper)
	} else {
		args = append(args, "--upperdir="+upper, "--workdir="+work)
	}
	testenv.StartServer(t, bin, nil, args...)
	return client{t: t, port: port}, upper
}

func TestListReadWrite(t *testing.T) {
	c, upper := startServer(t, false)

	out, err := c.run("nfs-ls", c.url("/"))
	if err != nil {
		t.Fatalf("nfs-ls /: %v", err)
	}
	if got, want := names(out), []string{"top.txt", "only1.txt", "only2.txt", "dir", "deep"}; !sameSet(got, want) {
		t.Errorf("root listing = %v, want %v", got, want)
	}
	out, err = c.run("nfs-ls", c.url("/dir"))
	if err != nil {
		t.Fatalf("nfs-ls /dir: %v", err)
	}
	if got, want := names(out), []string{"u.txt", "one.txt", "two.txt"}; !sameSet(got, want) {
		t.Errorf("merged dir listing = %v, want %v", got, want)
	}

	reads := map[string]string{
		"top.txt":          "upper\n", // the upper hides both lowers
		"only1.txt":        "only in lower1\n",
		"only2.txt":        "only in lower2\n",
		"dir/two.txt":      "two\n",
		"deep/er/file.txt": "deep file\n",
	}
	for path, want := range reads {
		out, err := c.run("nfs-cat", c.url("/"+path))
		if err != nil || out != want {
			t.Errorf("nfs-cat %s = %q, %v; want %q", path, out, err, want)
		}
	}

	// A 1 MiB file read through nfs-cp arrives whole.
	local := filepath.Join(t.TempDir(), "big")
	if _, err := c.run("nfs-cp", c.url("/deep/er/another.data"), local); err != nil {
		t.Fatalf("nfs-cp read: %v", err)
	}
	if b, _ := os.ReadFile(local); len(b) != 1<<20 || string(b[:16]) != "0123456789abcdef" {
		t.Errorf("nfs-cp read %d bytes, want %d", len(b), 1<<20)
	}

	// Writes land in the upper, in a directory that so far existed only in lower2.
	src := filepath.Join(t.TempDir(), "new.txt")
	if err := os.WriteFile(src, []byte("written over nfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.run("nfs-cp", src, c.url("/deep/er/new.txt")); err != nil {
		t.Fatalf("nfs-cp write: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "deep/er/new.txt")); err != nil || string(b) != "written over nfs\n" {
		t.Errorf("upper/deep/er/new.txt = %q, %v", b, err)
	}
	if out, err := c.run("nfs-cat", c.url("/deep/er/new.txt")); err != nil || out != "written over nfs\n" {
		t.Errorf("read back = %q, %v", out, err)
	}
	out, err = c.run("nfs-ls", c.url("/deep/er"))
	if err != nil {
		t.Fatalf("nfs-ls /deep/er: %v", err)
	}
	if got, want := names(out), []string{"file.txt", "another.data", "new.txt"}; !sameSet(got, want) {
		t.Errorf("listing after write = %v, want %v", got, want)
	}
	// nfs-cp refuses to overwrite (exit status 10) and the file stays as it was.
	if _, err := c.run("nfs-cp", src, c.url("/only1.txt")); err == nil {
		t.Errorf("nfs-cp over an existing file succeeded; libnfs should refuse")
	}
	if out, _ := c.run("nfs-cat", c.url("/only1.txt")); out != "only in lower1\n" {
		t.Errorf("only1.txt changed to %q", out)
	}
}

func TestReadOnly(t *testing.T) {
	c, upper := startServer(t, true)
	if out, err := c.run("nfs-cat", c.url("/top.txt")); err != nil || out != "upper\n" {
		t.Errorf("read-only nfs-cat top.txt = %q, %v", out, err)
	}
	src := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.run("nfs-cp", src, c.url("/new.txt")); err == nil {
		t.Errorf("write to a read-only export succeeded")
	}
	if _, err := os.Stat(filepath.Join(upper, "new.txt")); err == nil {
		t.Errorf("a read-only export wrote into the upper")
	}
}

func TestMountOfMissingDirectoryFails(t *testing.T) {
	c, _ := startServer(t, false)
	if _, err := c.run("nfs-ls", c.url("/no/such/dir")); err == nil {
		t.Errorf("mounting a missing directory succeeded")
	}
}

// TestExportDiscovery uses libnfs's default URL, which asks MOUNT EXPORT for the exports
// below the mounted one (auto-traverse-mounts): a server without EXPORT fails every call.
func TestExportDiscovery(t *testing.T) {
	c, _ := startServer(t, false)
	url := func(path string) string {
		return fmt.Sprintf("nfs://127.0.0.1%s?version=3&nfsport=%d&mountport=%d", path, c.port, c.port)
	}
	out, err := c.run("nfs-ls", url("/"))
	if err != nil {
		t.Fatalf("nfs-ls / with export discovery: %v", err)
	}
	if got, want := names(out), []string{"top.txt", "only1.txt", "only2.txt", "dir", "deep"}; !sameSet(got, want) {
		t.Errorf("root listing = %v, want %v", got, want)
	}
	if out, err := c.run("nfs-cat", url("//only2.txt")); err != nil || out != "only in lower2\n" {
		t.Errorf("nfs-cat only2.txt = %q, %v", out, err)
	}
}
