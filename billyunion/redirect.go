package billyunion

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// Redirects, the kernel's redirect_dir feature. Renaming a directory with
// lower parts does not copy its tree: the directory alone is copied up,
// moved, and given a redirect xattr naming where its lower parts are, which
// lookups of the layers below follow (namei.go lookupChild). The value is
// the kernel's:
//
//   - a bare name when the directory stays in the same parent: the layers
//     below look up that name in the parent's parts instead of the new one;
//   - a path from the layer roots, starting with "/", when it moved to
//     another parent: each layer below walks that path from its root.
//
// A redirect is found on a directory of any layer, the upper and the
// lowers alike (a lower layer may be a former upper), and tells where to
// continue below that layer. On a name lookup the kernel reads it on every
// directory part that is not opaque, except in the layer it looks in last
// (namei.go). A value that is empty, holds a "/" in a bare name, or an empty
// component in a path is malformed: the lookup answers EINVAL, as the
// kernel's does. A NUL ends the value (the kernel reads a C string); a
// component "", "." or ".." answers EACCES when it is looked up, and one of
// more than 255 bytes finds nothing, as in the kernel.
//
// Renaming keeps a directory's redirect when it stays in its parent, or
// when the redirect is a path already; otherwise it gets the bare old name
// (same parent) or the path of its old place from the root, each component
// spelled by that ancestor's own redirect where it has one, up to the
// first that is a path (the kernel's ovl_get_redirect). A path longer than
// redirectMax answers EXDEV, as does a redirect the upper cannot store:
// clients then copy the tree, as without redirects.

// redirectMax is the longest redirect path written: the kernel's
// redirect_max module parameter, 256 by default.
const redirectMax = 256

// redirectMode resolves the redirect_dir option as the kernel does: "on",
// "follow" or "nofollow" ("off" is "follow", as in a kernel built with
// OVERLAY_FS_REDIRECT_ALWAYS_FOLLOW, the default). With the user.overlay.
// prefix (the kernel's userxattr) only nofollow is allowed, and the default.
func redirectMode(opt, prefix string) (string, error) {
	userxattr := prefix == "user.overlay."
	switch opt {
	case "":
		if userxattr {
			return "nofollow", nil
		}
		return "on", nil
	case "on", "follow", "nofollow", "off":
		if userxattr && opt != "nofollow" {
			return "", fmt.Errorf("billyunion: redirect_dir=%s cannot be used with the user.overlay. prefix (the kernel refuses userxattr,redirect_dir=%s): %w", opt, opt, syscall.EINVAL)
		}
		if opt == "off" {
			return "follow", nil
		}
		return opt, nil
	}
	return "", fmt.Errorf("billyunion: redirect_dir=%q: must be on, follow, nofollow or off: %w", opt, syscall.EINVAL)
}

// redirectTarget is a parsed redirect: a name in the same parent (rel), or
// a path from the layer roots (abs, non-nil).
type redirectTarget struct {
	rel string
	abs []string
}

// parseRedirect reads a redirect xattr value as the kernel does; EINVAL for
// a malformed one.
func parseRedirect(v []byte) (redirectTarget, error) {
	if len(v) == 0 {
		return redirectTarget{}, syscall.EINVAL
	}
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	s := string(v)
	if !strings.HasPrefix(s, "/") {
		if strings.Contains(s, "/") {
			return redirectTarget{}, syscall.EINVAL
		}
		return redirectTarget{rel: s}, nil
	}
	comps := strings.Split(s[1:], "/")
	for _, c := range comps {
		if c == "" {
			return redirectTarget{}, syscall.EINVAL
		}
	}
	return redirectTarget{abs: comps}, nil
}

// redirectedName refuses a name a redirect gave that the kernel's lookup
// refuses: EACCES for "", "." and "..". (One too long finds nothing.)
func redirectedName(name string) error {
	if name == "" || name == "." || name == ".." {
		return syscall.EACCES
	}
	return nil
}

// readRedirect reads the redirect of the directory name in base, just
// found, and applies it to the walk: rest is the number of components of
// an absolute walk still to come after this one.
func (w *lookupWalk) readRedirect(base int, name string, rest int) error {
	v, err := layer.Getxattr(base, name, w.fs.x.Redirect())
	if err == unix.ENODATA || err == unix.EOPNOTSUPP {
		return nil
	}
	if err != nil {
		return layer.Errno(err)
	}
	t, err := parseRedirect(v)
	if err != nil {
		w.fs.warnMalformedRedirect(name, v)
		w.refused = true
		return err
	}
	w.redirected = true
	switch {
	case t.abs != nil:
		var tail []string
		if w.abs != nil {
			tail = w.abs[len(w.abs)-rest:]
		}
		w.abs = append(t.abs, tail...)
		// An absolute redirect resumes the search below even where an
		// ancestor on the walked path was opaque.
		w.stop = false
	case w.abs == nil:
		w.name = t.rel
	default:
		n := len(w.abs) - rest - 1
		w.abs = append(append(slices.Clone(w.abs[:n]), t.rel), w.abs[n+1:]...)
	}
	return nil
}

// walkAbs looks the walk's absolute path up in layer li from its root, one
// component at a time as the kernel does: an intermediate directory may be
// opaque (which ends the search below this layer), or carry a redirect of
// its own (which changes the path for the layers below, not this one's
// walk).
func (w *lookupWalk) walkAbs(li int, last bool) error {
	fs := w.fs
	comps := w.abs
	base := fs.layers[li].Root
	var held []int
	defer func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}()
	for k, c := range comps[:len(comps)-1] {
		found, st, err := w.step(li, base, c)
		if err != nil || !found {
			return err
		}
		if !layer.IsDir(&st) {
			w.stop = true
			return nil
		}
		if !last {
			v, xerr := layer.Getxattr(base, c, fs.x.Opaque())
			if xerr != nil && xerr != unix.ENODATA && xerr != unix.EOPNOTSUPP {
				return layer.Errno(xerr)
			}
			if xerr == nil && string(v) == "y" {
				w.stop = true // the layers below end here, unless a redirect further down resumes them
			} else if err := w.readRedirect(base, c, len(comps)-1-k); err != nil {
				return err
			}
		}
		fd, err := layer.OpenDir(base, c)
		if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
			return nil // replaced since the lookup: nothing there now
		}
		if err != nil {
			return layer.Errno(err)
		}
		held = append(held, fd)
		base = fd
	}
	return w.single(li, base, comps[len(comps)-1], last, comps[:len(comps)-1])
}

// openPart opens the directory part p of the entry name, a child of d.
func (fs *FS) openPart(d *dir, name string, p *part) (int, error) {
	if p.abs != nil {
		return fs.openPath(p.li, p.abs)
	}
	if p.name != "" {
		name = p.name
	}
	return layer.OpenDir(d.partFor(p.li).fd, name)
}

// openPath opens the directory at comps from layer li's root, one
// component at a time.
func (fs *FS) openPath(li int, comps []string) (int, error) {
	fd := fs.layers[li].Root
	for i, c := range comps {
		next, err := layer.OpenDir(fd, c)
		if i > 0 {
			unix.Close(fd)
		}
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// handleAtPath names the object at comps from layer li's root by its kernel
// file handle.
func (fs *FS) handleAtPath(li int, comps []string) (ObjectID, error) {
	if len(comps) == 1 {
		return fs.handleAt(li, fs.layers[li].Root, comps[0])
	}
	fd, err := fs.openPath(li, comps[:len(comps)-1])
	if err != nil {
		return ObjectID{}, layer.Errno(err)
	}
	defer unix.Close(fd)
	return fs.handleAt(li, fd, comps[len(comps)-1])
}

// movedRedirect is the redirect the directory e, a child of od with an
// upper part, gets as it moves (samedir: to another name in od); keep
// reports that its current redirect stays.
func (fs *FS) movedRedirect(od *dir, e *entry, samedir bool) (value string, keep bool, err error) {
	cur, has, err := fs.upperRedirect(fs.upperFD(od), e.name)
	if err != nil {
		return "", false, err
	}
	if has && (samedir || strings.HasPrefix(cur, "/")) {
		return "", true, nil
	}
	if samedir {
		return e.name, false, nil
	}
	// The old place, each component as its directory's redirect spells
	// it, from the first absolute one (or the root) down.
	own := e.name
	if has {
		own = cur
	}
	comps := []string{own}
	if !strings.HasPrefix(own, "/") {
		ancestors, err := fs.ancestorRedirects(od.path)
		if err != nil {
			return "", false, err
		}
		for i := len(od.path) - 1; i >= 0; i-- {
			c := od.path[i]
			if ancestors[i] != "" {
				c = ancestors[i]
			}
			comps = append(comps, c)
			if strings.HasPrefix(c, "/") {
				break
			}
		}
	}
	slices.Reverse(comps)
	value = strings.Join(comps, "/")
	if !strings.HasPrefix(value, "/") {
		value = "/" + value
	}
	if len(value) > redirectMax {
		return "", false, syscall.EXDEV // too long to record: clients copy the tree
	}
	return value, false, nil
}

// upperRedirect reads the redirect of the upper object name in the upper
// directory dir, as the kernel keeps it in memory: up to a NUL.
func (fs *FS) upperRedirect(dir int, name string) (string, bool, error) {
	v, err := layer.Getxattr(dir, name, fs.x.Redirect())
	if err == unix.ENODATA || err == unix.EOPNOTSUPP {
		return "", false, nil
	}
	if err != nil {
		return "", false, layer.Errno(err)
	}
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	return string(v), true, nil
}

// ancestorRedirects reads the upper redirects of the directories on comps
// (all in the upper: the parents of a renamed object are copied up first),
// "" where there is none.
func (fs *FS) ancestorRedirects(comps []string) ([]string, error) {
	out := make([]string, len(comps))
	fd := fs.layers[0].Root
	defer func() {
		if fd != fs.layers[0].Root {
			unix.Close(fd)
		}
	}()
	for i, c := range comps {
		r, _, err := fs.upperRedirect(fd, c)
		if err != nil {
			return nil, err
		}
		out[i] = r
		if i == len(comps)-1 {
			break
		}
		next, err := layer.OpenDir(fd, c)
		if err != nil {
			return nil, layer.Errno(err)
		}
		if fd != fs.layers[0].Root {
			unix.Close(fd)
		}
		fd = next
	}
	return out, nil
}

// setMovedRedirect gives the directory e, a child of od about to move,
// the redirect of its new place (movedRedirect), before the rename as the
// kernel does; restore undoes it if the rename then fails. A redirect the
// upper cannot store answers EXDEV (clients copy the tree).
func (fs *FS) setMovedRedirect(od *dir, e *entry, samedir bool) (restore func(), err error) {
	value, keep, err := fs.movedRedirect(od, e, samedir)
	if err != nil || keep {
		return func() {}, err
	}
	up := fs.upperFD(od)
	old, had, err := fs.upperRedirect(up, e.name)
	if err != nil {
		return nil, err
	}
	if err := layer.Setxattr(up, e.name, fs.x.Redirect(), []byte(value)); err != nil {
		fs.log.Warn("cannot record a redirect; the rename answers EXDEV", "dir", joinPath(append(slices.Clone(od.path), e.name)), "err", err)
		return nil, syscall.EXDEV
	}
	return func() {
		if had {
			layer.Setxattr(up, e.name, fs.x.Redirect(), []byte(old))
		} else {
			layer.Removexattr(up, e.name, fs.x.Redirect())
		}
	}, nil
}

// redirectWarnEvery spaces out the warnings about malformed redirects: every
// lookup of such a name meets one (the kernel's are rate limited too).
const redirectWarnEvery = 10 * time.Second

func (fs *FS) warnMalformedRedirect(name string, v []byte) {
	now := time.Now().UnixNano()
	last := fs.redirectWarned.Load()
	if now-last < int64(redirectWarnEvery) || !fs.redirectWarned.CompareAndSwap(last, now) {
		return
	}
	fs.log.Warn("a directory's redirect xattr is malformed: its lookup answers EINVAL", "name", name, "value", fmt.Sprintf("%q", v))
}
