package billyunion

import (
	"slices"
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
	// Where a directory part below a redirect (redirect.go) lies in its
	// layer: name, when not the union name, in the parent's part of the
	// same layer (a relative redirect); abs, its path from the layer's
	// root (an absolute one). Both empty for every other part: the union
	// name in the parent's part.
	name string
	abs  []string
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
	// sharedKeys: the directory cache made d's lower parts use the descriptors
	// sharedFDs counts (the union's Shared, shared.go), by these keys (zero for an
	// upper part).
	sharedKeys []devIno
	sharedFDs  *sharedFDs
	// pure: d resolves to the parts the lowers alone give at its path (lowercache.go).
	pure bool
	// base: d is a view of the Shared's lower-only directory base (lowerView), whose
	// descriptors it uses and holds until closed.
	base *dir
	// lowerGen: for a view, the lower-only union's directory cache generation as the
	// view was made: what an identity found in it is checked against.
	lowerGen uint64
	// shifted: a cached d's parts as its views in unions with an upper see them.
	shifted atomic.Pointer[shiftedParts]
}

func (d *dir) close() {
	if d == nil {
		return
	}
	if d.base != nil {
		d.base.close()
		return
	}
	if !d.owned {
		return
	}
	if d.cached.Load() {
		d.release()
		return
	}
	d.closeFDs()
}

func (d *dir) closeFDs() {
	for i, p := range d.parts {
		if d.sharedKeys != nil && d.sharedKeys[i] != (devIno{}) {
			d.sharedFDs.release(d.sharedKeys[i])
			continue
		}
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
	// index: the lower non-directory's index entry (index.go), whose data
	// and attributes the name shows; nil when it has none.
	index *indexRef
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

// isCommitted: layer li is a lower committed from the upper (Options.CommittedLowers),
// whose objects keep the identities their origin records give, as in the upper.
func (fs *FS) isCommitted(li int) bool {
	first := btoi(fs.hasUpper)
	return li >= first && li < first+fs.committed
}

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
// is opaque, and a non-directory below a directory is hidden. A directory
// part carrying a redirect tells where the layers below it are looked in
// (redirect.go): another name in d's parts, or a path from the layer roots.
func (fs *FS) lookupChild(d *dir, name string) (entry, error) {
	e, _, err := fs.lookupChildIn(d, name, allParts)
	return e, err
}

// allParts: every part of a directory may hold a name.
const allParts = ^uint64(0)

// lookupChildIn is lookupChild knowing that only the parts of d whose bit is
// set in held (bit i for part i, the 64th for it and all after) can hold
// name: the others are not asked, as if they answered ENOENT. (Once a
// redirect changed what is looked up below, every part is asked.) It also
// reports whether its error is a redirect the rules refuse (not followed,
// malformed, or naming what cannot be looked up), rather than a failure of a
// layer.
func (fs *FS) lookupChildIn(d *dir, name string, held uint64) (entry, bool, error) {
	return fs.lookupChildWith(d, name, held, false)
}

// lookupChildWith is lookupChildIn, without the index when noIndex is set: what a
// lower-only name shows in every workspace (shared.go).
func (fs *FS) lookupChildWith(d *dir, name string, held uint64, noIndex bool) (entry, bool, error) {
	w := lookupWalk{fs: fs, e: entry{name: name}, name: name, noIndex: noIndex}
	next, li := 0, -1
	for !w.stop {
		var parent *part
		if w.abs == nil {
			if next == len(d.parts) {
				break
			}
			i := next
			parent, next = &d.parts[i], i+1
			li = parent.li
			if w.name == name && held&(uint64(1)<<min(i, 63)) == 0 {
				continue
			}
		} else if li++; li == len(fs.layers) {
			break
		}
		if !fs.isUpper(li) && w.redirected && !fs.redirectFollow {
			return entry{}, true, syscall.EPERM // the kernel refuses to follow it
		}
		// The kernel reads no redirect in the layer it looks in last: the
		// bottom one when following, else the parent's last part.
		last := li == len(fs.layers)-1
		if !fs.redirectFollow {
			last = w.abs == nil && next == len(d.parts)
		}
		var err error
		if w.abs == nil {
			err = w.single(li, parent.fd, w.name, last, nil)
		} else {
			err = w.walkAbs(li, last)
		}
		if err != nil {
			return entry{}, w.refused, err
		}
	}
	if w.redirected && !fs.redirectFollow {
		return entry{}, true, syscall.EPERM
	}
	return w.e, false, nil
}

// lookupChildRefused is lookupChildIn asking every part.
func (fs *FS) lookupChildRefused(d *dir, name string) (entry, bool, error) {
	return fs.lookupChildIn(d, name, allParts)
}

// lookupWalk is the state of one lookupChild: the kernel's ovl_lookup_data.
type lookupWalk struct {
	fs *FS
	e  entry
	// name is looked up in the parent's parts; once an absolute redirect
	// was met, abs is looked up from the roots of the layers below instead.
	name       string
	abs        []string
	redirected bool // a redirect was read: the kernel's d.redirect
	isDir      bool // a directory was found: only directories merge below it
	stop       bool
	refused    bool // the error is a redirect's (lookupChildRefused)
	noIndex    bool // the index is not looked in (lookupChildWith)
}

// single looks name up in the directory base of layer li as the last
// component of the lookup: a part of the entry when it is one. at is the
// path of base from the layer root when the walk is an absolute one (nil
// otherwise).
func (w *lookupWalk) single(li, base int, name string, last bool, at []string) error {
	fs := w.fs
	found, st, err := w.step(li, base, name)
	if err != nil || !found {
		return err
	}
	if !layer.IsDir(&st) {
		if !w.isDir && len(w.e.parts) == 0 {
			w.e.parts = append(w.e.parts, part{li: li, fd: -1, st: st})
			if fs.indexFD >= 0 && !w.noIndex && !fs.isUpper(li) && st.Nlink > 1 {
				if w.e.index, err = fs.findIndex(li, base, name, &st); err != nil {
					return err
				}
			}
		}
		w.stop = true
		return nil
	}
	w.isDir = true
	np := part{li: li, fd: -1, st: st}
	if at != nil {
		np.abs = append(slices.Clone(at), name)
	} else if name != w.e.name {
		np.name = name
	}
	v, err := layer.Getxattr(base, name, fs.x.Opaque())
	if err != nil && err != unix.ENODATA && err != unix.EOPNOTSUPP {
		return layer.Errno(err)
	}
	opaque := err == nil && string(v) == "y"
	w.e.parts = append(w.e.parts, np)
	if opaque {
		if len(w.e.parts) == 1 {
			w.e.opaque = true
		}
		w.stop = true
		return nil
	}
	if last {
		return nil
	}
	return w.readRedirect(base, name, 0)
}

// step looks name up in base and says whether the lookup found an object
// there: not a whiteout (which stops the search), not missing.
func (w *lookupWalk) step(li, base int, name string) (bool, unix.Stat_t, error) {
	fs := w.fs
	if err := redirectedName(name); err != nil {
		w.refused = true
		return false, unix.Stat_t{}, err
	}
	st, err := layer.Lstat(base, name)
	if err == unix.ENOENT || err == unix.ENAMETOOLONG { // too long: only a redirect can give such a name
		return false, st, nil
	}
	if err != nil {
		return false, st, layer.Errno(err)
	}
	wo, err := fs.isWhiteout(base, name, &st)
	if err != nil {
		return false, st, err
	}
	if wo {
		if len(w.e.parts) == 0 && fs.isUpper(li) {
			w.e.upperWhiteout = true
		}
		w.stop = true
		return false, st, nil
	}
	return true, st, nil
}

// isWhiteout reports whether name in dir, of stat st, is a whiteout: a 0/0
// character device, or a zero-size regular file carrying the whiteout
// xattr. The kernel honours the second (its xattr whiteout) in every layer,
// whatever the parent's opaque mark, as its lookup does (checked on 6.18).
func (fs *FS) isWhiteout(dir int, name string, st *unix.Stat_t) (bool, error) {
	if layer.IsWhiteout(st) {
		return true, nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false, nil
	}
	wo, err := layer.HasXattr(dir, name, fs.x.Whiteout())
	return wo, layer.Errno(err)
}

// rootDir returns the union root with the layers' own root descriptors.
func (fs *FS) rootDir() (*dir, error) {
	d := &dir{fs: fs, parts: make([]part, len(fs.layers)), pure: true}
	for i, l := range fs.layers {
		st, err := layer.Fstat(l.Root)
		if err != nil {
			return nil, layer.Errno(err)
		}
		d.parts[i] = part{li: i, fd: l.Root, st: st}
	}
	return d, nil
}

// parentToIdentify resolves the directory holding comps' last component (comps has
// one at least), for identifying it, within an operation that has read the events. The
// root comes with its parts' attributes as New found them (rootParts): identifying a
// name reads only their descriptors, devices, inodes and types, which never change, so
// every layer's root need not be fstat'ed again (identifyDir fstats the top part when
// the root's own attributes are answered). Not for a change in the root (rootDir).
func (fs *FS) parentToIdentify(comps []string) (*dir, error) {
	if len(comps) == 1 {
		return &dir{fs: fs, parts: fs.rootParts[:len(fs.rootParts):len(fs.rootParts)], pure: true}, nil
	}
	return fs.resolveDirIn(comps[:len(comps)-1], false, true)
}

// descend opens the directory entry e (a child of d) as a dir.
func (fs *FS) descend(d *dir, e *entry) (*dir, error) {
	child := &dir{fs: fs, path: append(append([]string(nil), d.path...), e.name), owned: true, pure: fs.childPure(d, e)}
	for _, p := range e.parts {
		fd, err := fs.openPart(d, e.name, &p)
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
		gen = cache.currentGeneration() // get read the events, or the caller did
		cur, start = cache.longestPrefix(comps)
		if cur == nil {
			// From the root, which is lower-pure and never cached.
			if d, ok, err := fs.fromLowers(nil, comps, 0, synced); ok {
				return d, err
			}
		}
	}
	if cur == nil {
		var err error
		if cur, err = fs.rootDir(); err != nil {
			return nil, err
		}
	}
	for i := start; i < len(comps); i++ {
		if useCache {
			if d, ok, err := fs.fromLowers(cur, comps, i, synced); ok {
				cur.close()
				return d, err
			}
		}
		next, err := fs.step(cur, comps[i], copyUp)
		if err == nil && useCache {
			cache.put(comps[:i+1], next, cur, gen)
		}
		cur.close()
		if err != nil {
			return nil, err
		}
		cur = next
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
// operation that has just read the directory caches' events (readEvents).
func (fs *FS) lookupToIdentify(p string) (*dir, entry, error) {
	comps, err := splitPath(p)
	if err != nil || len(comps) == 0 || !fs.dirs.on() {
		return fs.lookup(p)
	}
	d, err := fs.parentToIdentify(comps)
	if err != nil {
		return nil, entry{}, err
	}
	e, err := fs.childToIdentify(d, comps)
	if err != nil {
		d.close()
		return nil, entry{}, err
	}
	return d, e, nil
}

// childToIdentify is the entry at comps, a child of the resolved directory d, for
// reading its identity and attributes (lookupToIdentify); ENOENT when d holds nothing
// there. A directory the directory cache holds is taken from it, its parts' attributes
// included: they are exact while no event named an entry of its parts or the directory
// itself (getFresh; only its atime can be older than the disk's); so is one the
// workspace sees through a view (freshChildView).
func (fs *FS) childToIdentify(d *dir, comps []string) (entry, error) {
	name := comps[len(comps)-1]
	if fs.dirs.on() {
		if child := fs.dirs.getFresh(comps, true); child != nil {
			defer child.close()
			return entryOfParts(name, child.parts), nil
		}
		if base := fs.freshChildBase(d, comps); base != nil {
			defer base.close()
			return entryOfParts(name, fs.viewParts(base)), nil // a view's, without making one
		}
	}
	return fs.childBelowUpper(d, name)
}

// childBelowUpper is lookupChild of name in d for identifying it, sparing the upper
// part's stat while the directory cache knows that part holds nothing at name (the
// memo fromLowers keeps for directories, here for every name): a READ of a lower file
// at the root looked in the upper first every time. ENOENT when d holds nothing there.
func (fs *FS) childBelowUpper(d *dir, name string) (entry, error) {
	holder := d
	if len(d.path) == 0 {
		holder = nil // the root, as the memo names it
	}
	held, learn := allParts, false
	var gen uint64
	if fs.dirs.on() && d.base == nil && fs.dirHasUpper(d) {
		if fs.dirs.upperAbsent(holder, name) {
			held &^= 1 // part 0, the upper
		} else {
			learn, gen = true, fs.dirs.currentGeneration()
		}
	}
	e, _, err := fs.lookupChildIn(d, name, held)
	if err == nil && !e.exists() {
		err = syscall.ENOENT
	}
	if err == nil && learn && !fs.inUpper(&e) {
		// Found below an upper part that holds nothing there (anything it held, a
		// whiteout or an object, would be the entry's top or would have hidden it).
		fs.dirs.putUpperAbsent(holder, name, gen)
	}
	return e, err
}

// entryOfParts is the entry of a resolved directory with parts, named name in its
// parent, as a lookup there finds it: its parts and their attributes, without
// descriptors (they stay the directory's).
func entryOfParts(name string, parts []part) entry {
	e := entry{name: name, parts: make([]part, len(parts))}
	for i, cp := range parts {
		cp.fd = -1
		e.parts[i] = cp
	}
	return e
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
		wo, err := fs.isWhiteout(p.fd, name, &st)
		if err != nil {
			return false, err
		}
		return !wo, nil
	}
	return false, nil
}
