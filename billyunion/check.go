package billyunion

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// Finding is one inconsistency Check found, and whether it was repaired.
type Finding struct {
	// Kind names the check: work-leftover, reset-interrupted, commit-interrupted, snapshot-partial,
	// index-stale, origin-dangling, redirect-dangling, whiteout-useless,
	// lower-whiteout-useless.
	Kind string
	// Where is the object: a union path ("/a/b"), or a path in the workdir or a lower.
	Where    string
	Detail   string
	Repaired bool
}

// CheckOptions names the layer set to check. With Repair, what can be repaired without
// losing data is; nothing may have the workspace open meanwhile (the caller holds its
// workdir lock).
type CheckOptions struct {
	Lowers      []string
	Upper, Work string // both "" for lowers alone
	XattrPrefix string
	Repair      bool
}

// Check is a consistency check of a layer set, like the kernel overlay's checks at mount
// and more: leftovers in the work directory (the union's scratch, an interrupted reset,
// half-taken snapshots), index entries out of step with their links (stale, orphaned),
// origins and redirects in the upper that point nowhere, whiteouts in the upper or a
// lower that shadow nothing. Repairs: leftovers removed (an interrupted reset recovered
// first), stale index entries removed (as the union does at start), a dangling origin
// removed (the object keeps its data; its inode number and handles change), a dangling
// redirect replaced by an opaque mark (the directory shows what it showed), a useless
// whiteout in the upper removed. Lowers are only read: what is found there is reported.
func Check(opts CheckOptions) ([]Finding, error) {
	var out []Finding
	add := func(f Finding) { out = append(out, f) }
	if opts.Upper != "" {
		if err := checkWork(opts, add); err != nil {
			return out, err
		}
	}
	layers := opts.Lowers
	if opts.Upper != "" {
		layers = append([]string{opts.Upper}, opts.Lowers...)
	}
	// The union as the kernel would mount it read-only: the upper as the top-most lower.
	m, err := New(Options{Lowers: layers, XattrPrefix: opts.XattrPrefix, RedirectDir: "follow", Index: "off"})
	if err != nil {
		return out, err
	}
	defer m.Close()
	c := checker{fs: m, opts: opts, add: add}
	defer c.close()
	if opts.Upper != "" {
		if err := c.indexEntries(); err != nil {
			return out, err
		}
	}
	// Every layer but the bottom one: its whiteouts should hide something below.
	for li := 0; li < len(m.layers)-1; li++ {
		if err := c.layerTree(li, m.layers[li].Root, nil); err != nil {
			return out, err
		}
	}
	return out, nil
}

// checkWork looks at the work directory's own contents.
func checkWork(opts CheckOptions, add func(Finding)) error {
	ws := Workspace{Upper: opts.Upper, Work: opts.Work, XattrPrefix: opts.XattrPrefix}
	for _, j := range []struct{ dir, kind, what string }{
		{resetDirName, "reset-interrupted", "a reset"}, {commitDirName, "commit-interrupted", "a commit"},
		{flattenStage, "commit-interrupted", "a flattened commit (its stage, before any change)"},
		{commitDoneName, "commit-interrupted", "a finished commit's journal being removed"}} {
		if _, err := os.Lstat(filepath.Join(opts.Work, j.dir)); err != nil {
			continue
		}
		f := Finding{Kind: j.kind, Where: filepath.Join(opts.Work, j.dir), Detail: j.what + " was interrupted"}
		if opts.Repair {
			if err := ws.Recover(); err != nil {
				return fmt.Errorf("recovering %s: %w", f.Where, err)
			}
			f.Repaired, f.Detail = true, f.Detail+": taken back or finished (Recover)"
		}
		add(f)
	}
	// Leftovers: entries of a workdir directory that keep says are not, removed by a repair.
	leftovers := func(dir, kind, detail string, keep func(name string) bool) {
		entries, err := os.ReadDir(filepath.Join(opts.Work, dir))
		if err != nil {
			return
		}
		for _, e := range entries {
			if keep(e.Name()) {
				continue
			}
			p := filepath.Join(opts.Work, dir, e.Name())
			f := Finding{Kind: kind, Where: p, Detail: detail}
			if opts.Repair {
				f.Repaired = os.RemoveAll(p) == nil
			}
			add(f)
		}
	}
	isTemp := func(prefix string) func(string) bool {
		return func(name string) bool { return !strings.HasPrefix(name, prefix) }
	}
	leftovers(snapshotsDirName, "snapshot-partial", "a snapshot half taken or half removed", isTemp(snapshotTemp))
	leftovers("work", "work-leftover", "left by an interrupted change", func(string) bool { return false })
	// The moves index's own files are records; only its temporaries are leftovers.
	leftovers(movesDir, "work-leftover", "left by an interrupted change", isTemp(tempRecordPrefix))
	return nil
}

type checker struct {
	fs   *FS
	opts CheckOptions
	add  func(Finding)
	// unders are read-only unions of the layers below each layer, made on first need.
	unders map[int]*FS
}

// under is the union of the layers below layer li of fs.
func (c *checker) under(li int) (*FS, error) {
	if u := c.unders[li]; u != nil {
		return u, nil
	}
	u, err := New(Options{Lowers: c.fs.rootPaths[li+1:], XattrPrefix: c.fs.x.Prefix, RedirectDir: "follow", Index: "off"})
	if err != nil {
		return nil, err
	}
	if c.unders == nil {
		c.unders = map[int]*FS{}
	}
	c.unders[li] = u
	return u, nil
}

func (c *checker) close() {
	for _, u := range c.unders {
		u.Close()
	}
}

// indexEntries reports (and with Repair removes) the index entries the union would
// remove at start.
func (c *checker) indexEntries() error {
	wl, err := layer.Open(c.opts.Work)
	if err != nil {
		return err
	}
	defer wl.Close()
	fd, err := layer.OpenDir(wl.Root, "index")
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return c.fs.scanIndex(fd, func(name, why string) error {
		f := Finding{Kind: "index-stale", Where: filepath.Join(c.opts.Work, "index", name), Detail: why}
		if c.opts.Repair {
			f.Repaired = layer.RemoveAll(fd, name) == nil
		}
		c.add(f)
		return nil
	})
}

// layerTree walks layer li's directory dir (union path comps): its whiteouts, and in the
// upper (li 0 with an upper) its origins and redirects.
func (c *checker) layerTree(li, fd int, comps []string) error {
	names, err := layer.ReadNames(fd, "")
	if err != nil {
		return err
	}
	upper := c.opts.Upper != "" && li == 0
	var below *dir // the union directory at comps, resolved on first need
	defer func() {
		if below != nil {
			below.close()
		}
	}()
	shadows := func(name string) (bool, error) {
		if !upper {
			// A lower's whiteout hides what the layers below it have at its path.
			under, err := c.under(li)
			if err != nil {
				return false, err
			}
			_, err = under.Lstat(path.Join(append(append([]string(nil), comps...), name)...))
			return err == nil, nil
		}
		if below == nil {
			d, err := c.fs.resolveDir(comps, false)
			if err != nil {
				return false, err
			}
			below = d
		}
		for _, p := range below.parts {
			if p.li <= li || p.fd < 0 {
				continue
			}
			if _, err := layer.Lstat(p.fd, name); err == nil {
				return true, nil
			}
		}
		return false, nil
	}
	for _, name := range names {
		st, err := layer.Lstat(fd, name)
		if err != nil {
			continue // gone meanwhile
		}
		where := "/" + path.Join(append(append([]string(nil), comps...), name)...)
		wo, err := c.fs.isWhiteout(fd, name, &st)
		if err != nil {
			return err
		}
		if wo {
			hides, err := shadows(name)
			if err != nil {
				// The directory does not resolve in the union (hidden, or a malformed
				// redirect on the way): nothing below to compare with.
				continue
			}
			if !hides {
				if upper {
					f := Finding{Kind: "whiteout-useless", Where: where, Detail: "a whiteout in the upper that hides nothing"}
					if c.opts.Repair {
						f.Repaired = unix.Unlinkat(fd, name, 0) == nil
					}
					c.add(f)
				} else {
					c.add(Finding{Kind: "lower-whiteout-useless", Where: c.fs.rootPaths[li] + where, Detail: "a whiteout in a lower layer that hides nothing (lowers are not changed)"})
				}
			}
			continue
		}
		if upper {
			c.origin(fd, name, where, &st)
		}
		if !layer.IsDir(&st) {
			continue
		}
		if upper {
			if err := c.redirect(fd, name, where, append(append([]string(nil), comps...), name)); err != nil {
				return err
			}
		}
		child, err := layer.OpenDir(fd, name)
		if err != nil {
			continue
		}
		err = c.layerTree(li, child, append(append([]string(nil), comps...), name))
		unix.Close(child)
		if err != nil {
			return err
		}
	}
	return nil
}

// origin reports an upper object's origin record that decodes to no lower object.
func (c *checker) origin(dir int, name, where string, st *unix.Stat_t) {
	rec, err := layer.Getxattr(dir, name, c.fs.x.Origin())
	if err != nil || len(rec) == 0 {
		return
	}
	o, err := layer.DecodeOrigin(rec)
	if err == nil {
		for _, fd := range c.fs.ino.decodeFDs {
			if ost, serr := layer.StatOrigin(fd, o); serr == nil && ost.Mode&unix.S_IFMT == st.Mode&unix.S_IFMT {
				return
			}
		}
	}
	f := Finding{Kind: "origin-dangling", Where: where, Detail: "its origin record names no lower object"}
	if c.opts.Repair {
		f.Repaired = layer.Removexattr(dir, name, c.fs.x.Origin()) == nil
		f.Detail += "; removed (the object keeps its data; its inode number and file handle change)"
	}
	c.add(f)
}

// redirect reports an upper directory whose redirect leads to no lower directory.
func (c *checker) redirect(dir int, name, where string, comps []string) error {
	target, ok, err := c.fs.upperRedirect(dir, name)
	if err != nil || !ok {
		return err
	}
	d, err := c.fs.resolveDir(comps, false)
	if err != nil {
		return nil // not reachable in the union: nothing it shows changes
	}
	lowerParts := 0
	for _, p := range d.parts {
		if p.li > 0 {
			lowerParts++
		}
	}
	d.close()
	if lowerParts > 0 {
		return nil
	}
	f := Finding{Kind: "redirect-dangling", Where: where, Detail: fmt.Sprintf("its redirect %q leads to no lower directory", target)}
	if c.opts.Repair {
		x := copyup.Xattrs{Prefix: c.fs.x.Prefix}
		err := layer.Setxattr(dir, name, x.Opaque(), []byte("y"))
		if err == nil {
			err = layer.Removexattr(dir, name, x.Redirect())
		}
		f.Repaired = err == nil
		f.Detail += "; replaced by an opaque mark (the directory shows what it showed)"
	}
	c.add(f)
	return nil
}
