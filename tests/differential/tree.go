package differential

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// entryInfo is what the comparison looks at for one object.
type entryInfo struct {
	kind    string // file, dir, symlink, fifo, char, block, socket, whiteout
	mode    uint32 // permission and special bits
	uid     uint32
	gid     uint32
	nlink   uint64
	size    int64 // regular files and symlinks
	content string
	mtime   int64 // ns
	xattrs  string
}

func (e entryInfo) String() string {
	s := fmt.Sprintf("%s mode=%o uid=%d gid=%d nlink=%d", e.kind, e.mode, e.uid, e.gid, e.nlink)
	if e.kind == "file" || e.kind == "symlink" {
		s += fmt.Sprintf(" size=%d content=%s", e.size, e.content)
	}
	if e.xattrs != "" {
		s += " xattrs=" + e.xattrs
	}
	return s
}

func kindOf(mode uint32, rdev uint64) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		if rdev == 0 {
			return "whiteout"
		}
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "?"
}

func infoFromStat(st *syscall.Stat_t) entryInfo {
	return entryInfo{
		kind: kindOf(st.Mode, st.Rdev), mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid,
		nlink: uint64(st.Nlink), size: st.Size, mtime: st.Mtim.Nano(),
	}
}

func digest(r io.Reader) string {
	h := sha256.New()
	io.Copy(h, r)
	return fmt.Sprintf("%x", h.Sum(nil)[:8])
}

// walkHost describes every object under root (a mount or a layer) without
// following symlinks; overlay xattrs are recorded when withXattrs is set.
func walkHost(root string, withXattrs bool) (map[string]entryInfo, error) {
	tree := map[string]entryInfo{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p != root {
				// Listed but not found: the kernel passes readdir of a
				// non-merged directory straight through, so it lists
				// xattr whiteouts that its lookup hides. ovlnfs hides
				// them in both (docs/semantics.md).
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = ""
		}
		e := infoFromStat(fi.Sys().(*syscall.Stat_t))
		switch e.kind {
		case "file":
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			e.content = digest(f)
			f.Close()
		case "symlink":
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.content = t
		}
		if withXattrs {
			e.xattrs = overlayXattrs(p, rel == "")
		}
		tree[rel] = e
		return nil
	})
	return tree, err
}

// overlayXattrs renders the overlay markers of an upper-layer object.
// Origins name lower inodes, which differ between the two copies of the
// layers, so only their header (version, magic, length, flags, type, uuid)
// is compared. The root's uuid is random per overlay.
func overlayXattrs(p string, isRoot bool) string {
	var parts []string
	for _, name := range []string{"opaque", "impure", "origin", "redirect", "whiteout", "uuid", "nlink"} {
		if name == "uuid" && isRoot {
			continue
		}
		buf := make([]byte, 512)
		n, err := unix.Lgetxattr(p, "trusted.overlay."+name, buf)
		if err != nil {
			continue
		}
		v := buf[:n]
		if name == "origin" && len(v) >= 21 {
			v = v[:5] // uuid is per-filesystem: zero vs the fs uuid equally on both
		}
		parts = append(parts, fmt.Sprintf("%s=%x", name, v))
	}
	return strings.Join(parts, ",")
}

// walkUnion describes the union's visible tree through billyunion, and
// checks that listing and lookup agree on inode numbers.
func walkUnion(fs *billyunion.FS) (map[string]entryInfo, error) {
	tree := map[string]entryInfo{}
	var walk func(dir string) error
	walk = func(dir string) error {
		fis, err := fs.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("readdir %q: %w", dir, err)
		}
		for _, fi := range fis {
			p := strings.TrimPrefix(dir+"/"+fi.Name(), "/")
			lfi, err := fs.Lstat(p)
			if err != nil {
				return fmt.Errorf("lstat %q listed by readdir: %w", p, err)
			}
			lst, rst := lfi.Sys().(*syscall.Stat_t), fi.Sys().(*syscall.Stat_t)
			if lst.Ino != rst.Ino {
				return fmt.Errorf("%s: readdir inode %d, lstat inode %d", p, rst.Ino, lst.Ino)
			}
			e := infoFromStat(lst)
			switch e.kind {
			case "file":
				f, err := fs.Open(p)
				if err != nil {
					return fmt.Errorf("open %q: %w", p, err)
				}
				e.content = digest(f)
				f.Close()
			case "symlink":
				if e.content, err = fs.Readlink(p); err != nil {
					return fmt.Errorf("readlink %q: %w", p, err)
				}
			case "dir":
				if err := walk(p); err != nil {
					return err
				}
			}
			tree[p] = e
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	rfi, err := fs.Lstat("")
	if err != nil {
		return nil, err
	}
	tree[""] = infoFromStat(rfi.Sys().(*syscall.Stat_t))
	return tree, nil
}

// deterministicBefore separates the fixed times the test sets (generated
// layers, utimes) from clock times stamped while it runs.
var deterministicBefore = when.Add(time.Hour).UnixNano()

func deterministic(ns int64) bool { return ns < deterministicBefore }

// diffTrees lists the differences between two trees. Directory sizes are
// never compared (they depend on the history of a directory's blocks).
func diffTrees(kernel, union map[string]entryInfo) []string {
	var diffs []string
	keys := map[string]bool{}
	for k := range kernel {
		keys[k] = true
	}
	for k := range union {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, p := range sorted {
		k, okK := kernel[p]
		u, okU := union[p]
		switch {
		case !okK:
			diffs = append(diffs, fmt.Sprintf("%q: only in ovlnfs: %v", p, u))
		case !okU:
			diffs = append(diffs, fmt.Sprintf("%q: only in kernel: %v", p, k))
		default:
			if k.kind == "dir" {
				k.size, u.size = 0, 0
			}
			if k.kind == "whiteout" { // kernel whiteouts may share one inode
				k.nlink, u.nlink = 0, 0
			}
			if !deterministic(k.mtime) && !deterministic(u.mtime) {
				// Both stamped by the clock during the run (created or
				// changed by an operation): the two sides ran at
				// different instants. Generated times and utimes values
				// are deterministic and must agree, so an untouched
				// object whose mtime ovlnfs changed is still caught.
				k.mtime, u.mtime = 0, 0
			}
			if k != u {
				diffs = append(diffs, fmt.Sprintf("%q:\n      kernel: %v mtime=%d\n      ovlnfs: %v mtime=%d", p, k, k.mtime, u, u.mtime))
			}
		}
	}
	return diffs
}

// rmrfOps expands "rm -rf p" into the unlink/rmdir sequence rm would issue,
// deepest first, from the kernel's view of the tree.
func rmrfOps(tree map[string]entryInfo, p string) []op {
	e, ok := tree[p]
	if !ok || e.kind != "dir" {
		return []op{{kind: "unlink", a: p}}
	}
	var below []string
	for q := range tree {
		if strings.HasPrefix(q, p+"/") {
			below = append(below, q)
		}
	}
	slices.SortFunc(below, func(a, b string) int {
		if d := strings.Count(b, "/") - strings.Count(a, "/"); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	var ops []op
	for _, q := range below {
		if tree[q].kind == "dir" {
			ops = append(ops, op{kind: "rmdir", a: q})
		} else {
			ops = append(ops, op{kind: "unlink", a: q})
		}
	}
	return append(ops, op{kind: "rmdir", a: p})
}

func sortStrings(s []string) { sort.Strings(s) }

func under(p, dir string) bool {
	return dir == "" || p == dir || strings.HasPrefix(p, dir+"/") || dir == path.Clean(p)
}
