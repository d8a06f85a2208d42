//go:build xfsquota

package billyunion

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQuotaXFSProject needs OVLNFS_XFS_PRJQUOTA_DIR naming a directory on an XFS filesystem
// mounted with prjquota. It is built only with the xfsquota tag: tests/uml's
// TestKernelXFSProjectQuota builds it (go test -c -tags xfsquota), makes such a filesystem
// in a UML guest (the host kernel here has no quota support) and runs it there. The union
// picks the project quota: a pre-existing upper file is counted, a write past the quota
// answers EDQUOT (from the kernel) with the project's blocks within the limit, a copy-up
// past it too, leaving nothing; creates stop at the inode limit; a removal makes room; a
// restart keeps the project.
func TestQuotaXFSProject(t *testing.T) {
	base := os.Getenv("OVLNFS_XFS_PRJQUOTA_DIR")
	if base == "" {
		t.Fatal("OVLNFS_XFS_PRJQUOTA_DIR not set: this test is run by tests/uml TestKernelXFSProjectQuota in a UML guest with XFS prjquota")
	}
	root, err := os.MkdirTemp(base, "prj-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	ls := &layerSet{t: t, root: root, n: 1}
	for _, d := range []string{"l1", "u", "w"} {
		noErr(t, "mkdir", os.Mkdir(filepath.Join(root, d), 0o755))
	}
	ls.file("l1", "big", strings.Repeat("b", 6<<20))
	ls.file("l1", "small", "small")
	ls.file("u", "pre", strings.Repeat("p", 1<<20))
	const limit, inodes = 4 << 20, 40
	open := func() *FS {
		fs, err := New(Options{Lowers: []string{ls.path("l1", "")}, Upper: ls.path("u", ""), Work: ls.path("w", ""),
			XattrPrefix: "trusted.overlay.", QuotaBytes: limit, QuotaInodes: inodes})
		noErr(t, "New", err)
		return fs
	}
	fs := open()
	u, ok := fs.Quota()
	if !ok || u.Kind != QuotaProject {
		t.Fatalf("quota %+v, %v: want the project quota", u, ok)
	}
	if u.Bytes < 1<<20 || u.LimitBytes != limit || u.LimitInodes != inodes {
		t.Fatalf("usage %+v: the pre-existing 1 MiB is not counted", u)
	}
	t.Logf("at start: %+v", u)
	f, err := fs.Create("fill")
	noErr(t, "create", err)
	buf := make([]byte, 64<<10)
	var werr error
	for i := 0; i < 128 && werr == nil; i++ {
		_, werr = f.Write(buf)
		if werr == nil {
			werr = f.(interface{ Sync() error }).Sync()
		}
	}
	f.Close()
	if st, err := os.Stat(ls.path("u", "fill")); err == nil {
		t.Logf("fill: %d bytes, %d blocks", st.Size(), st.Sys().(*syscall.Stat_t).Blocks)
	}
	if u, _ := fs.Quota(); !errors.Is(werr, syscall.EDQUOT) {
		t.Logf("usage after the fill: %+v", u)
		t.Fatalf("writing 8 MiB into a 4 MiB project quota: %v, want EDQUOT", werr)
	}
	u, _ = fs.Quota()
	t.Logf("after the fill: %+v", u)
	if u.Bytes > limit {
		t.Fatalf("the project holds %d bytes, past its limit %d", u.Bytes, limit)
	}
	wantErrno(t, "copy-up of 6 MiB", fs.Chmod("big", 0o600), syscall.EDQUOT)
	if _, err := os.Lstat(ls.path("u", "big")); !os.IsNotExist(err) {
		t.Fatalf("the refused copy-up left an upper file: %v", err)
	}
	if w, _ := os.ReadDir(ls.path("w", "work")); len(w) != 0 {
		t.Fatalf("the refused copy-up left %d entries in the work directory", len(w))
	}
	noErr(t, "remove fill", fs.Remove("fill"))
	waitFreed(t, fs, func(u QuotaUsage) bool { return u.Bytes < 2<<20 })
	noErr(t, "copy-up of a small file", fs.Chmod("small", 0o600))
	var cerr error
	n := 0
	for ; n < 2*inodes && cerr == nil; n++ {
		var f2 interface{ Close() error }
		f2, cerr = fs.Create("n" + itoa(n))
		if cerr == nil {
			f2.Close()
		}
	}
	if !errors.Is(cerr, syscall.EDQUOT) {
		t.Fatalf("creating %d files under an inode quota of %d: %v, want EDQUOT", n, inodes, cerr)
	}
	u, _ = fs.Quota()
	t.Logf("at the inode limit after %d creates: %+v", n, u)
	if u.Inodes > inodes {
		t.Fatalf("the project holds %d inodes, past its limit %d", u.Inodes, inodes)
	}
	noErr(t, "remove", fs.Remove("n0"))
	// XFS frees a removed inode, and its quota, in the background (inodegc); syncfs
	// waits for that.
	waitFreed(t, fs, func(u QuotaUsage) bool { return u.Inodes < inodes })
	f, err = fs.Create("again")
	noErr(t, "create after a removal", err)
	_, err = f.Write(make([]byte, 1<<20))
	noErr(t, "write after a removal", err)
	f.Close()
	id := fs.project.id
	fs.Close()
	fs = open()
	defer fs.Close()
	if fs.project == nil || fs.project.id != id {
		t.Fatalf("after a restart: project %+v, want id %d", fs.project, id)
	}
}

// waitFreed waits until the project's usage satisfies ok: XFS frees a removed inode, and
// its quota, in the background (inodegc); statfs pushes that along.
func waitFreed(t *testing.T, fs *FS, ok func(QuotaUsage) bool) {
	t.Helper()
	var u QuotaUsage
	for i := 0; i < 200; i++ {
		var sfs unix.Statfs_t
		unix.Fstatfs(fs.layers[0].Root, &sfs)
		if u, _ = fs.Quota(); ok(u) {
			t.Logf("freed after %d polls: %+v", i, u)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the removal freed nothing in 10 s: %+v", u)
}
