package differential

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// TestRedirectModesMatchKernel: for every redirect_dir mode and a set of redirect values,
// valid and malformed, on a directory of the top lower layer and of the upper, the kernel
// overlay and the union answer the same: the lookup of the directory and of names in it,
// its listing, and a rename of a lower directory (made, or EXDEV).
func TestRedirectModesMatchKernel(t *testing.T) {
	requireOverlay(t)
	values := []string{"target", "/target", "/deep/target", "other", "", "a/b", "//target", "/target/",
		"/", "target\x00junk", "..", "/target/..", ".", "\x00", strings.Repeat("t", 300), "/deep", "dir"}
	for _, mode := range []string{"on", "follow", "nofollow", "off"} {
		for _, where := range []string{"l1", "u"} {
			for _, v := range values {
				if diff := compareRedirectCase(t, mode, where, v); diff != "" {
					t.Errorf("redirect_dir=%s, redirect %q on %s/dir: %s", mode, v, where, diff)
				}
			}
		}
	}
}

func compareRedirectCase(t *testing.T, mode, where, value string) string {
	root := t.TempDir()
	build := func(dir string) {
		for _, f := range []string{"l2/target/low", "l2/deep/target/deeplow", "l2/other/o", "l1/dir/top", "l2/plain/p", "l2/dir/below"} {
			p := filepath.Join(dir, f)
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, os.WriteFile(p, []byte(f), 0o644))
		}
		for _, d := range []string{"u", "w", "m"} {
			must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
		}
		if where == "u" {
			must(t, os.Mkdir(filepath.Join(dir, "u/dir"), 0o755))
		}
		must(t, unix.Lsetxattr(filepath.Join(dir, where, "dir"), "trusted.overlay.redirect", []byte(value), 0))
		// The whiteout the kernel leaves where the directory came from: without it the
		// lower directory would be part of two union directories, which the kernel
		// does not make (and answers unpredictably).
		if target, ok := redirectTarget(value); ok {
			p := filepath.Join(dir, where, target)
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, unix.Mknod(p, unix.S_IFCHR, 0))
		}
	}
	k, u := filepath.Join(root, "k"), filepath.Join(root, "u")
	build(k)
	build(u)
	mnt := filepath.Join(k, "m")
	opts := fmt.Sprintf("lowerdir=%[1]s/l1:%[1]s/l2,upperdir=%[1]s/u,workdir=%[1]s/w,redirect_dir=%[2]s", k, mode)
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer unmount(mnt)
	fs, err := billyunion.New(billyunion.Options{Lowers: []string{u + "/l1", u + "/l2"}, Upper: u + "/u", Work: u + "/w",
		XattrPrefix: "trusted.overlay.", RedirectDir: mode})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	var diffs []string
	for _, p := range []string{"dir", "dir/top", "dir/low", "dir/deeplow", "dir/o", "dir/below"} {
		var st unix.Stat_t
		kerr := errnoOf(unix.Lstat(filepath.Join(mnt, p), &st))
		_, uerr := fs.Lstat(p)
		if kerr != errnoOf(uerr) {
			diffs = append(diffs, fmt.Sprintf("lstat %s: kernel %v, ovlnfs %v", p, kerr, uerr))
		}
	}
	if kn, un := kernelNames(mnt, "dir"), unionNames(fs, "dir"); kn != un {
		diffs = append(diffs, fmt.Sprintf("listing of dir: kernel %q, ovlnfs %q", kn, un))
	}
	if kn, un := kernelNames(mnt, ""), unionNames(fs, ""); kn != un {
		diffs = append(diffs, fmt.Sprintf("listing of the root: kernel %q, ovlnfs %q", kn, un))
	}
	kerr := errnoOf(unix.Rename(filepath.Join(mnt, "plain"), filepath.Join(mnt, "plain2")))
	uerr := errnoOf(fs.Rename("plain", "plain2"))
	if kerr != uerr {
		diffs = append(diffs, fmt.Sprintf("rename of a lower dir: kernel %v, ovlnfs %v", kerr, uerr))
	}
	if kerr == 0 {
		kv, _ := lgetxattr(filepath.Join(k, "u/plain2"), "trusted.overlay.redirect")
		uv, _ := lgetxattr(filepath.Join(u, "u/plain2"), "trusted.overlay.redirect")
		if kv != uv {
			diffs = append(diffs, fmt.Sprintf("redirect written: kernel %q, ovlnfs %q", kv, uv))
		}
	}
	return strings.Join(diffs, "; ")
}

// kernelNames lists dir in the kernel overlay: the names whose lookup succeeds.
func kernelNames(mnt, dir string) string {
	ents, err := os.ReadDir(filepath.Join(mnt, dir))
	if err != nil {
		return "error: " + errnoOf(err).Error()
	}
	var names []string
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(mnt, dir, e.Name()), &st) == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

func unionNames(fs *billyunion.FS, dir string) string {
	fis, err := fs.ReadDir(dir)
	if err != nil {
		return "error: " + errnoOf(err).Error()
	}
	var names []string
	for _, fi := range fis {
		names = append(names, fi.Name())
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

func lgetxattr(p, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// redirectTarget is where a valid redirect value on the top-level "dir" points, from the
// layer root.
func redirectTarget(v string) (string, bool) {
	if i := strings.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	switch {
	case v == "" || v == "dir" || v == "." || v == ".." || len(v) > 255:
		return "", false
	case !strings.HasPrefix(v, "/"):
		return v, !strings.Contains(v, "/")
	}
	for _, c := range strings.Split(v[1:], "/") {
		if c == "" || c == "." || c == ".." {
			return "", false
		}
	}
	return v[1:], true
}
