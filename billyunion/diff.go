package billyunion

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"syscall"
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
