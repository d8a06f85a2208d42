package billyunion

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// ChangeKind is what a change did to a path, as docker diff says it.
type ChangeKind byte

// The change kinds.
const (
	Added   ChangeKind = 'A'
	Changed ChangeKind = 'C'
	Deleted ChangeKind = 'D'
)

// Change is one path a workspace's upper layer changes in the union of its lowers.
type Change struct {
	Kind ChangeKind
	// Path is the union path, "/"-rooted.
	Path string
	// Type is the object's kind ("file", "dir", "symlink", "char", "block", "fifo",
	// "socket"): the object now for Added and Changed, the one removed for Deleted.
	Type string
	// Size is the object's size now (0 for Deleted).
	Size int64
}

// DiffOptions names a workspace: its lowers, top-most first, and its upper. The layers
// are only read, so a workspace being served can be diffed (a change made meanwhile may
// or may not show).
type DiffOptions struct {
	Lowers      []string
	Upper       string
	XattrPrefix string // as Options.XattrPrefix
	RedirectDir string // as Options.RedirectDir; "" follows redirects
	// Work, when set, is the workspace's workdir. With index=on its index (WORK/index)
	// tells which lower files with several names were copied up through one of them:
	// their other names show the copy too (index.go), and are listed as changed. ""
	// reads no index, as for a bare upper, whose diff lists only the names it holds.
	Work string
}

// Diff lists, sorted by path, what the upper layer changes in the union of the lowers:
// Added for a path the lowers lack (everything below an added directory too), Deleted
// for a path of the lowers the union hides (once: not what was below it), Changed for a
// path both have whose object the upper replaced or changed (contents, attributes,
// xattrs: any copy-up; a directory that holds changes is a copied-up directory). It reads
// the union as the kernel would mount it, upper as the top-most lower layer, against the
// lowers alone, so whiteouts, opaque directories, redirects and the index mean what they
// mean there. Only directories with an upper part are listed.
func Diff(opts DiffOptions) ([]Change, error) {
	if opts.Upper == "" {
		return nil, fmt.Errorf("billyunion: diff needs an upper layer: %w", syscall.EINVAL)
	}
	redirect := opts.RedirectDir
	if redirect == "" || redirect == "on" {
		redirect = "follow"
	}
	open := func(lowers []string) (*FS, error) {
		return New(Options{Lowers: lowers, XattrPrefix: opts.XattrPrefix, RedirectDir: redirect, Index: "off"})
	}
	merged, err := open(append([]string{opts.Upper}, opts.Lowers...))
	if err != nil {
		return nil, err
	}
	defer merged.Close()
	base, err := open(opts.Lowers)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	d := differ{merged: merged, base: base}
	if err := d.dir(""); err != nil {
		return nil, err
	}
	if opts.Work != "" {
		if err := d.indexedNames(filepath.Join(opts.Work, indexDirName)); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(d.out, func(a, b Change) int {
		switch {
		case a.Path < b.Path:
			return -1
		case a.Path > b.Path:
			return 1
		}
		return 0
	})
	return d.out, nil
}

type differ struct {
	merged, base *FS
	out          []Change
}

func (d *differ) add(kind ChangeKind, p string, fi os.FileInfo) {
	c := Change{Kind: kind, Path: "/" + p, Type: typeName(fi.Mode())}
	if kind != Deleted {
		c.Size = fi.Size()
	}
	d.out = append(d.out, c)
}

// dir compares the directory p, which has an upper part in the merged union.
func (d *differ) dir(p string) error {
	now, err := listByName(d.merged, p)
	if err != nil {
		return err
	}
	before, err := listByName(d.base, p)
	if err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
		return err
	}
	for name, fi := range before {
		if _, ok := now[name]; !ok {
			d.add(Deleted, path.Join(p, name), fi)
		}
	}
	for name, fi := range now {
		child := path.Join(p, name)
		old, existed := before[name]
		switch {
		case !existed:
			d.add(Added, child, fi)
			if fi.IsDir() {
				if err := d.added(child); err != nil {
					return err
				}
			}
		case sameLayerObject(fi, old):
			// The lowers' own object: nothing below it changed either, since every
			// change in the upper has its parents copied up.
		default:
			d.add(Changed, child, fi)
			if fi.IsDir() {
				if err := d.dir(child); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// indexedNames lists as changed the names of lower files the index at dir holds a copy
// of that the upper does not hold itself: the copy-up through one name shows under
// them all, as the kernel's index makes it. Their names are found by a walk of the
// lowers' union, which is made only when the index holds such a copy.
func (d *differ) indexedNames(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	copies := map[devIno]int64{} // lower object -> its copy's size
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		rec, err := layer.Getxattr(fd, e.Name(), d.base.x.Origin())
		if err != nil {
			continue // an entry without a usable origin names no lower file
		}
		o, err := layer.DecodeOrigin(rec)
		if err != nil {
			continue
		}
		st, err := layer.Lstat(fd, e.Name())
		if err != nil {
			return err
		}
		for _, fd := range d.base.ino.decodeFDs {
			if lst, err := layer.StatOrigin(fd, o); err == nil && lst.Mode&unix.S_IFMT == unix.S_IFREG {
				copies[devIno{lst.Dev, lst.Ino}] = st.Size
				break
			}
		}
	}
	if len(copies) == 0 {
		return nil
	}
	listed := make(map[string]bool, len(d.out))
	for _, c := range d.out {
		listed[c.Path] = true
	}
	return d.walkLowers("", func(p string, fi os.FileInfo) error {
		dev, ino, ok := LayerObject(fi)
		size, copied := copies[devIno{dev, ino}]
		if !ok || !copied || listed["/"+p] {
			return nil
		}
		// Shown by the workspace (no upper name over it, no opaque or removed parent).
		if now, err := d.merged.Lstat("/" + p); err == nil && sameLayerObject(now, fi) {
			d.out = append(d.out, Change{Kind: Changed, Path: "/" + p, Type: typeName(fi.Mode()), Size: size})
		}
		return nil
	})
}

// walkLowers calls fn for every non-directory below p in the lowers' union.
func (d *differ) walkLowers(p string, fn func(p string, fi os.FileInfo) error) error {
	infos, err := d.base.ReadDir("/" + p)
	if err != nil {
		return err
	}
	for _, fi := range infos {
		child := path.Join(p, fi.Name())
		if fi.IsDir() {
			err = d.walkLowers(child, fn)
		} else {
			err = fn(child, fi)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// added lists everything below an added directory as added.
func (d *differ) added(p string) error {
	now, err := listByName(d.merged, p)
	if err != nil {
		return err
	}
	for name, fi := range now {
		child := path.Join(p, name)
		d.add(Added, child, fi)
		if fi.IsDir() {
			if err := d.added(child); err != nil {
				return err
			}
		}
	}
	return nil
}

func listByName(fs *FS, p string) (map[string]os.FileInfo, error) {
	infos, err := fs.ReadDir(p)
	if err != nil {
		return nil, err
	}
	m := make(map[string]os.FileInfo, len(infos))
	for _, fi := range infos {
		m[fi.Name()] = fi
	}
	return m, nil
}

// sameLayerObject: a and b are one layer object (a merged directory by its top part).
func sameLayerObject(a, b os.FileInfo) bool {
	ad, ai, aok := LayerObject(a)
	bd, bi, bok := LayerObject(b)
	return aok && bok && ad == bd && ai == bi && a.Mode().Type() == b.Mode().Type()
}

func typeName(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m&os.ModeCharDevice != 0:
		return "char"
	case m&os.ModeDevice != 0:
		return "block"
	case m&os.ModeNamedPipe != 0:
		return "fifo"
	case m&os.ModeSocket != 0:
		return "socket"
	}
	return "file"
}
