package differential

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// checkDiff compares billyunion.Diff of the upper the kernel wrote with an independent
// walk: the kernel overlay's tree against the lowers' (a read-only union of them), path
// by path, by kind, mode, owner, size, content, mtime and ctime (a copy-up changes an
// object's ctime), a deleted path said once, an added directory's contents all added.
// With index=on a lower file with several names that one name copied up shows the copy
// under its other names too: Diff reads the kernel's index (its workdir's) to name them.
func (s *sides) checkDiff() error {
	lowers := []string{s.kdir + "/l1", s.kdir + "/l2", s.kdir + "/l3"}
	opts := billyunion.DiffOptions{Lowers: lowers, Upper: s.kdir + "/u", XattrPrefix: "trusted.overlay."}
	if s.index {
		opts.Work = s.kdir + "/w"
	}
	got, err := billyunion.Diff(opts)
	if err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	merged, err := hostObjects(s.mnt)
	if err != nil {
		return err
	}
	base, err := billyunion.New(billyunion.Options{Lowers: lowers, XattrPrefix: "trusted.overlay.", RedirectDir: "follow"})
	if err != nil {
		return err
	}
	defer base.Close()
	before, err := unionObjects(base)
	if err != nil {
		return err
	}
	want := walkChanges(merged, before)
	var have []string
	for _, c := range got {
		have = append(have, string(c.Kind)+" "+c.Path)
	}
	if !slices.Equal(have, want) {
		return fmt.Errorf("ovlnfs diff of the kernel's upper:\n    %s\n  the kernel overlay against its lowers:\n    %s",
			strings.Join(have, "\n    "), strings.Join(want, "\n    "))
	}
	return nil
}

// object is one path's description for the walk: entryInfo and the ctime.
type object struct {
	entryInfo
	ctime int64
	dir   bool
}

// hostObjects is walkHost's tree of root with each object's ctime.
func hostObjects(root string) (map[string]object, error) {
	tree, err := walkHost(root, false)
	if err != nil {
		return nil, err
	}
	out := make(map[string]object, len(tree))
	for rel, e := range tree {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, rel), &st); err != nil {
			return nil, err
		}
		out[rel] = object{entryInfo: e, ctime: st.Ctim.Nano(), dir: e.kind == "dir"}
	}
	return out, nil
}

func unionObjects(fs *billyunion.FS) (map[string]object, error) {
	out := map[string]object{}
	var walk func(p string) error
	walk = func(p string) error {
		fi, err := fs.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		o := object{entryInfo: infoFromStat(st), ctime: st.Ctim.Nano(), dir: fi.IsDir()}
		switch o.kind {
		case "file":
			f, err := fs.Open(p)
			if err != nil {
				return err
			}
			o.content = digest(f)
			f.Close()
		case "symlink":
			o.content, _ = fs.Readlink(p)
		}
		out[p] = o
		if !fi.IsDir() {
			return nil
		}
		infos, err := fs.ReadDir(p)
		if err != nil {
			return err
		}
		for _, c := range infos {
			if err := walk(path.Join(p, c.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk("")
}

// walkChanges is the path-by-path comparison, sorted as Diff sorts.
func walkChanges(now, before map[string]object) []string {
	children := func(m map[string]object, dir string) map[string]object {
		out := map[string]object{}
		for p, o := range m {
			if p != "" && path.Dir("/"+p) == "/"+dir {
				out[path.Base(p)] = o
			}
		}
		return out
	}
	var out []string
	var walk func(dir string, allAdded bool)
	walk = func(dir string, allAdded bool) {
		n := children(now, dir)
		var b map[string]object
		if !allAdded {
			b = children(before, dir)
		}
		for name := range b {
			if _, ok := n[name]; !ok {
				out = append(out, "D /"+path.Join(dir, name))
			}
		}
		for name, o := range n {
			p := path.Join(dir, name)
			old, existed := b[name]
			switch {
			case !existed:
				out = append(out, "A /"+p)
				if o.dir {
					walk(p, true)
				}
			case o.entryInfo != old.entryInfo || o.ctime != old.ctime:
				out = append(out, "C /"+p)
				if o.dir {
					walk(p, !old.dir)
				}
			}
		}
	}
	walk("", false)
	sort.Slice(out, func(i, j int) bool { return out[i][2:] < out[j][2:] })
	return out
}
