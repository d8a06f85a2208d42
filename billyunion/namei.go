package billyunion

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// part is one layer's contribution to a union object.
type part struct {
	li int         // index into FS.layers
	fd int         // O_PATH descriptor (directories being walked only), else -1
	st unix.Stat_t // as looked up
	// opaqueX marks a lower directory whose opaque xattr is "x": it may
	// hold xattr whiteouts.
	opaqueX bool
}

// dir is a union directory resolved to its parts, top-down, with a
// descriptor open on each. Close releases them.
type dir struct {
	fs    *FS
	path  []string
	parts []part
	owned bool // descriptors belong to this dir (not the layer roots)
	// cached: the directory cache shares d (dircache.go); refs counts its holders, and
	// the last to let go closes the descriptors. A cached dir is never changed.
	cached atomic.Bool
	refs   atomic.Int32
}

func (d *dir) close() {
	if d == nil || !d.owned {
		return
	}
	if d.cached.Load() {
		d.release()
		return
	}
	d.closeFDs()
}

func (d *dir) closeFDs() {
	for _, p := range d.parts {
		unix.Close(p.fd)
	}
}

// partFor returns the part of d in layer li, or nil.
func (d *dir) partFor(li int) *part {
	for i := range d.parts {
		if d.parts[i].li == li {
			return &d.parts[i]
		}
	}
	return nil
}

// entry is the result of looking up one name in a union directory.
type entry struct {
	name  string
	parts []part // top-down; exactly one for a non-directory, none if absent
	// upperWhiteout: absent, but the upper holds a whiteout at the name
	// that a new object must replace.
	upperWhiteout bool
	// opaque: the topmost directory part carries opaque=y.
	opaque bool
}

func (e *entry) exists() bool { return len(e.parts) > 0 }
func (e *entry) top() *part   { return &e.parts[0] }
func (e *entry) isDir() bool  { return e.exists() && layer.IsDir(&e.parts[0].st) }
func (e *entry) isSymlink() bool {
	return e.exists() && e.parts[0].st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// merged reports a directory with more than one part: the kernel's "merge"
// type, reported with nlink 1.
func (e *entry) merged() bool { return e.isDir() && len(e.parts) > 1 }

func (fs *FS) isUpper(li int) bool { return fs.hasUpper && li == 0 }

func (fs *FS) inUpper(e *entry) bool { return e.exists() && fs.isUpper(e.parts[0].li) }

// hasLower reports whether any part of e comes from a lower layer.
func (fs *FS) hasLower(e *entry) bool {
	for _, p := range e.parts {
		if !fs.isUpper(p.li) {
			return true
		}
	}
	return false
}

// upperFD is the descriptor of d's upper part; callers make sure it exists.
func (fs *FS) upperFD(d *dir) int { return d.parts[0].fd }

func (fs *FS) dirHasUpper(d *dir) bool { return len(d.parts) > 0 && fs.isUpper(d.parts[0].li) }

// lookupChild applies the overlay lookup rules to name in d: top-down, a
// whiteout or a non-directory stops the search, directories merge until one
// is opaque, and a non-directory below a directory is hidden.
func (fs *FS) lookupChild(d *dir, name string) (entry, error) {
	return fs.lookupChildIn(d, name, allParts)
}

// allParts: every part of a directory may hold a name.
const allParts = ^uint64(0)

// lookupChildIn is lookupChild knowing that only the parts of d whose bit is
// set in held (bit i for part i, the 64th for it and all after) can hold
// name: the others are not asked, as if they answered ENOENT.
func (fs *FS) lookupChildIn(d *dir, name string, held uint64) (entry, error) {
	e := entry{name: name}
	for i := range d.parts {
		p := &d.parts[i]
		if held&(uint64(1)<<min(i, 63)) == 0 {
			continue
		}
		st, err := layer.Lstat(p.fd, name)
		if err == unix.ENOENT {
			continue
		}
		if err != nil {
			return entry{}, layer.Errno(err)
		}
		upper := fs.isUpper(p.li)
		if layer.IsWhiteout(&st) {
			if len(e.parts) == 0 && upper {
				e.upperWhiteout = true
			}
			break
		}
		if !upper && p.opaqueX && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
			wo, err := layer.HasXattr(p.fd, name, fs.x.Whiteout())
			if err != nil {
				return entry{}, layer.Errno(err)
			}
			if wo {
				break
			}
		}
		if !layer.IsDir(&st) {
			if len(e.parts) == 0 {
				e.parts = append(e.parts, part{li: p.li, fd: -1, st: st})
			}
			break
		}
		np := part{li: p.li, fd: -1, st: st}
		v, err := layer.Getxattr(p.fd, name, fs.x.Opaque())
		if err != nil && err != unix.ENODATA && err != unix.EOPNOTSUPP {
			return entry{}, layer.Errno(err)
		}
		opaque := err == nil && string(v) == "y"
		np.opaqueX = err == nil && string(v) == "x" && !upper
		e.parts = append(e.parts, np)
		if opaque {
			if len(e.parts) == 1 {
				e.opaque = true
			}
			break
		}
	}
	return e, nil
}

// rootDir returns the union root with the layers' own root descriptors.
func (fs *FS) rootDir() (*dir, error) {
	d := &dir{fs: fs, parts: make([]part, len(fs.layers))}
	for i, l := range fs.layers {
		st, err := layer.Fstat(l.Root)
		if err != nil {
			return nil, layer.Errno(err)
		}
		d.parts[i] = part{li: i, fd: l.Root, st: st, opaqueX: fs.rootOpaqueX[i]}
	}
	return d, nil
}

// descend opens the directory entry e (a child of d) as a dir.
func (fs *FS) descend(d *dir, e *entry) (*dir, error) {
	child := &dir{fs: fs, path: append(append([]string(nil), d.path...), e.name), owned: true}
	for _, p := range e.parts {
		parent := d.partFor(p.li)
		fd, err := layer.OpenDir(parent.fd, e.name)
		if err != nil {
			child.close()
			return nil, layer.Errno(err)
		}
		np := p
		np.fd = fd
		child.parts = append(child.parts, np)
	}
	return child, nil
}

// resolveDir walks comps from the root and returns the directory there.
// With copyUp set, every directory on the way that has no upper part yet is
// copied up first (parents first), so the result has an upper part.
func (fs *FS) resolveDir(comps []string, copyUp bool) (*dir, error) {
	return fs.resolveDirIn(comps, copyUp, false)
}

// resolveDirIn is resolveDir; synced says the caller's operation has read the directory
// cache's events already (dirCache.get).
func (fs *FS) resolveDirIn(comps []string, copyUp, synced bool) (*dir, error) {
	cache := fs.dirs
	useCache := !copyUp && len(comps) > 0 && cache.on()
	var gen uint64
	start := 0
	var cur *dir
	if useCache {
		if d := cache.get(comps, synced); d != nil {
			return d, nil
		}
		if synced {
			gen = cache.currentGeneration()
		} else {
			gen = cache.generation()
		}
		cur, start = cache.longestPrefix(comps)
	}
	if cur == nil {
		var err error
		if cur, err = fs.rootDir(); err != nil {
			return nil, err
		}
	}
	for i := start; i < len(comps); i++ {
		next, err := fs.step(cur, comps[i], copyUp)
		cur.close()
		if err != nil {
			return nil, err
		}
		cur = next
		if useCache {
			cache.put(comps[:i+1], cur, gen)
		}
	}
	return cur, nil
}

// step descends from d into its child directory name, retrying when the
// entry changes between lookup and open.
func (fs *FS) step(d *dir, name string, copyUp bool) (*dir, error) {
	var lastErr error
	for attempt := 0; attempt < maxRetries; attempt++ {
		e, err := fs.lookupChild(d, name)
		if err != nil {
			return nil, err
		}
		if !e.exists() {
			return nil, syscall.ENOENT
		}
		if !e.isDir() {
			return nil, syscall.ENOTDIR
		}
		if copyUp && !fs.inUpper(&e) {
			if err := fs.copyUpChild(d, &e); err != nil && !isRetry(err) {
				return nil, err
			}
			continue
		}
		child, err := fs.descend(d, &e)
		if err == nil {
			return child, nil
		}
		if err != syscall.ENOENT && err != syscall.ENOTDIR && err != syscall.ELOOP {
			return nil, err
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = syscall.EAGAIN
	}
	return nil, lastErr
}

// maxRetries bounds the re-lookups after a concurrent change; each retry
// means another thread made progress.
const maxRetries = 64

// lookup resolves a whole path to its parent directory and entry. For the
// root, parent is nil and the entry describes the root itself.
func (fs *FS) lookup(p string) (*dir, entry, error) {
	comps, err := splitPath(p)
	if err != nil {
		return nil, entry{}, err
	}
	return fs.lookupIn(comps, false)
}

// lookupIn is lookup of the path comps; synced as for resolveDirIn.
func (fs *FS) lookupIn(comps []string, synced bool) (*dir, entry, error) {
	if len(comps) == 0 {
		root, err := fs.rootDir()
		if err != nil {
			return nil, entry{}, err
		}
		e := entry{parts: root.parts}
		return nil, e, nil
	}
	d, err := fs.resolveDirIn(comps[:len(comps)-1], false, synced)
	if err != nil {
		return nil, entry{}, err
	}
	e, err := fs.lookupChild(d, comps[len(comps)-1])
	if err != nil {
		d.close()
		return nil, entry{}, err
	}
	if !e.exists() {
		d.close()
		return nil, entry{}, syscall.ENOENT
	}
	return d, e, nil
}

// lookupToIdentify is lookup for reading an object's identity and attributes, within an
// operation that has just read the directory cache's events (generation). A
// directory the directory cache holds is taken from it, its parts' attributes included:
// they are exact, because every change to a directory's entries or attributes is an event
// that empties the cache (only its atime can be older than the disk's).
func (fs *FS) lookupToIdentify(p string) (*dir, entry, error) {
	comps, err := splitPath(p)
	if err != nil || len(comps) == 0 || !fs.dirs.on() {
		return fs.lookup(p)
	}
	child := fs.dirs.get(comps, true)
	if child == nil {
		return fs.lookupIn(comps, true)
	}
	defer child.close()
	d, err := fs.resolveDirIn(comps[:len(comps)-1], false, true)
	if err != nil {
		return nil, entry{}, err
	}
	e := entry{name: comps[len(comps)-1], parts: make([]part, len(child.parts))}
	for i, cp := range child.parts {
		cp.fd = -1 // the descriptors stay the cached directory's
		e.parts[i] = cp
	}
	return d, e, nil
}

// lowerPositive reports whether removing the upper object at name in d would
// uncover something from a lower layer, i.e. whether a whiteout is needed:
// the first lower part of d holding the name has a real entry there.
func (fs *FS) lowerPositive(d *dir, name string) (bool, error) {
	for i := range d.parts {
		p := &d.parts[i]
		if fs.isUpper(p.li) {
			continue
		}
		st, err := layer.Lstat(p.fd, name)
		if err == unix.ENOENT {
			continue
		}
		if err != nil {
			return false, layer.Errno(err)
		}
		if layer.IsWhiteout(&st) {
			return false, nil
		}
		if p.opaqueX && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
			wo, err := layer.HasXattr(p.fd, name, fs.x.Whiteout())
			if err != nil {
				return false, layer.Errno(err)
			}
			if wo {
				return false, nil
			}
		}
		return true, nil
	}
	return false, nil
}
