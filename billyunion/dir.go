package billyunion

import (
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/readdircache"
)

// target is a locked upper parent directory and the entry at one name in it.
type target struct {
	d      *dir
	e      entry
	unlock func()
}

// release ends the change to the parent's listing begun when the target
// was locked (builds that overlapped it look its name up again before they
// are published), then unlocks.
func (t *target) release() {
	t.d.fs.listings.EndChange(dirKey(t.d))
	t.unlock()
	t.d.close()
}

// checkFunc validates an entry before and again after locking; its error is
// the call's answer.
type checkFunc func(d *dir, e *entry) error

// lockTarget resolves the parent dirComps and the entry name in it, checks
// it, copies the parent chain up when needed (only once the check passed, so
// a failing call changes nothing), then locks the parent's upper directory
// (and, with lockChild, the entry's own upper directory) and checks again.
func (fs *FS) lockTarget(dirComps []string, name string, check checkFunc, lockChild bool) (*target, error) {
	if !fs.hasUpper {
		return nil, syscall.EROFS
	}
	for attempt := 0; attempt < maxRetries; attempt++ {
		d, e, err := fs.resolveChecked(dirComps, name, check)
		if err != nil {
			return nil, err
		}
		if !fs.dirHasUpper(d) {
			d.close()
			if err := fs.copyUpDir(dirComps); err != nil {
				return nil, err
			}
			continue
		}
		keys := []uint64{d.parts[0].st.Ino}
		if lockChild && fs.inUpper(&e) && e.isDir() {
			keys = append(keys, e.top().st.Ino)
		}
		unlock := fs.locks.lock(keys...)
		t, err := fs.recheck(d, name, check, keys[1:], unlock)
		if isRetry(err) {
			continue
		}
		return t, err
	}
	return nil, syscall.EAGAIN
}

// recheck repeats the lookup and check under the locks. When the entry's
// own locked directory (childKeys) is no longer the one there, it answers
// errRetry.
func (fs *FS) recheck(d *dir, name string, check checkFunc, childKeys []uint64, unlock func()) (*target, error) {
	fail := func(err error) (*target, error) {
		unlock()
		d.close()
		return nil, err
	}
	if err := fs.checkAlive(d); err != nil {
		return fail(err)
	}
	e, err := fs.lookupChild(d, name)
	if err == nil {
		err = check(d, &e)
	}
	if err != nil {
		return fail(err)
	}
	if len(childKeys) > 0 && !(fs.inUpper(&e) && e.isDir() && e.top().st.Ino == childKeys[0]) {
		return fail(errRetry)
	}
	fs.listings.BeginChange(dirKey(d), name)
	return &target{d: d, e: e, unlock: unlock}, nil
}

func (fs *FS) resolveChecked(dirComps []string, name string, check checkFunc) (*dir, entry, error) {
	d, err := fs.resolveDir(dirComps, false)
	if err != nil {
		return nil, entry{}, err
	}
	e, err := fs.lookupChild(d, name)
	if err == nil {
		err = check(d, &e)
	}
	if err != nil {
		d.close()
		return nil, entry{}, err
	}
	return d, e, nil
}

// copyUpDir makes sure the directory at comps has an upper part.
func (fs *FS) copyUpDir(comps []string) error {
	d, err := fs.resolveDir(comps, true)
	if err != nil {
		return err
	}
	d.close()
	return nil
}

func mustNotExist(_ *dir, e *entry) error {
	if e.exists() {
		return syscall.EEXIST
	}
	return nil
}

// newObject describes an object to create: its type and permission bits, and
// how to make it as a temporary in the work directory.
type newObject struct {
	mode  uint32 // S_IFMT | permission bits
	owner owner  // who creates it
	build func(work int, tmp string) error
}

// create makes a new object at path p: built in the work directory with its
// final owner, mode and (for a directory replacing a whiteout) opaque mark,
// then renamed into place in one step. It returns the listing cache key of
// the parent directory.
func (fs *FS) create(p string, obj newObject) (parentKey readdircache.Key, err error) {
	defer func() { err = fs.quotaErr(err, 0) }()
	p = fs.respell(p)
	dirComps, name, err := splitTarget(p)
	if err == syscall.EBUSY {
		err = syscall.EEXIST
	}
	if err != nil {
		return parentKey, err
	}
	t, err := fs.lockTarget(dirComps, name, mustNotExist, false)
	if err != nil {
		return parentKey, err
	}
	defer t.release()
	parentKey = dirKey(t.d)
	placed := false
	if !t.e.upperWhiteout { // over a whiteout, the new object takes the whiteout's place
		if err := fs.quota.reserveInodes(1, false); err != nil {
			return parentKey, err
		}
		defer func() {
			if !placed {
				fs.quota.release(1, 0)
			}
		}()
	}
	wd := fs.work.FD()
	tmp := fs.work.TempName()
	if err := obj.build(wd, tmp); err != nil {
		return parentKey, layer.Errno(err)
	}
	defer func() {
		if !placed {
			fs.discard(tmp)
		}
	}()
	if err := fs.initNew(t.d, wd, tmp, obj.mode, obj.owner, t.e.upperWhiteout); err != nil {
		return parentKey, err
	}
	if err := fs.placeNew(t, tmp, obj.mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
		return parentKey, err
	}
	placed = true
	return parentKey, nil
}

// initNew gives a freshly built object its owner and mode the way the
// kernel would for a create in the parent: the caller's uid and gid, but the
// parent's gid and setgid bit when the parent is setgid.
func (fs *FS) initNew(parent *dir, wd int, tmp string, mode uint32, o owner, overWhiteout bool) error {
	pst := &parent.parts[0].st
	gid := o.gid
	perm := mode & 0o7777
	isDir := mode&unix.S_IFMT == unix.S_IFDIR
	if isDir {
		perm &= 0o1777 // mkdir(2) keeps only permissions and sticky
	}
	if pst.Mode&unix.S_ISGID != 0 {
		gid = int(pst.Gid)
		if isDir {
			perm |= unix.S_ISGID
		}
	}
	if err := unix.Fchownat(wd, tmp, o.uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return layer.Errno(err)
	}
	if mode&unix.S_IFMT != unix.S_IFLNK {
		if err := layer.Chmod(wd, tmp, perm); err != nil {
			return layer.Errno(err)
		}
	}
	// A new directory where a deleted one was must not show the old lower
	// contents again. With redirect_dir=on the kernel marks every new
	// directory in a merged one opaque (it no longer allows offline
	// changes to the lowers), so ovlnfs does too.
	if isDir && (overWhiteout || fs.redirectCreate && len(parent.parts) > 1) {
		if err := layer.Setxattr(wd, tmp, fs.x.Opaque(), []byte("y")); err != nil {
			return layer.Errno(err)
		}
	}
	return nil
}

// placeNew renames the finished temporary into t's name: with NOREPLACE
// over nothing, over a whiteout by replacing it (a directory cannot replace
// a non-directory, so it is exchanged and the whiteout removed).
func (fs *FS) placeNew(t *target, tmp string, isDir bool) error {
	wd, up := fs.work.FD(), fs.upperFD(t.d)
	switch {
	case !t.e.upperWhiteout:
		return layer.Errno(unix.Renameat2(wd, tmp, up, t.e.name, unix.RENAME_NOREPLACE))
	case !isDir:
		return layer.Errno(unix.Renameat(wd, tmp, up, t.e.name))
	}
	if err := unix.Renameat2(wd, tmp, up, t.e.name, unix.RENAME_EXCHANGE); err != nil {
		return layer.Errno(err)
	}
	fs.discard(tmp) // now the old whiteout
	return nil
}

func (fs *FS) discard(tmp string) {
	if err := fs.work.Discard(tmp); err != nil {
		fs.log.Error("removing temporary entry from work directory", "name", tmp, "err", err)
	}
}

// newWhiteout makes a whiteout as a temporary in the work directory.
func (fs *FS) newWhiteout() (string, error) {
	tmp := fs.work.TempName()
	if err := unix.Mknodat(fs.work.FD(), tmp, unix.S_IFCHR, 0); err != nil {
		return "", fs.quotaErr(layer.Errno(err), 0)
	}
	return tmp, nil
}

// Mkdir creates a directory; EEXIST if the name exists.
func (fs *FS) Mkdir(p string, perm os.FileMode) error { return fs.mkdir(fs.owner, p, perm) }

func (fs *FS) mkdir(o owner, p string, perm os.FileMode) error {
	_, err := fs.create(p, newObject{
		mode:  unix.S_IFDIR | unixPerm(perm),
		owner: o,
		build: func(wd int, tmp string) error {
			return unix.Mkdirat(wd, tmp, 0o700)
		},
	})
	return err
}

// MkdirAll creates p and any missing parents; existing directories are fine.
func (fs *FS) MkdirAll(p string, perm os.FileMode) error { return fs.mkdirAll(fs.owner, p, perm) }

func (fs *FS) mkdirAll(o owner, p string, perm os.FileMode) error {
	p = fs.respell(p)
	comps, err := splitPath(p)
	if err != nil {
		return err
	}
	for i := range comps {
		sub := joinPath(comps[:i+1])
		fi, err := fs.Lstat(sub)
		if err == nil {
			if !fi.IsDir() {
				return syscall.ENOTDIR
			}
			continue
		}
		if err != syscall.ENOENT {
			return err
		}
		if err := fs.mkdir(o, sub, perm); err != nil && err != syscall.EEXIST {
			return err
		}
	}
	return nil
}

// Symlink creates link pointing at target, stored as given.
func (fs *FS) Symlink(target, link string) error { return fs.symlink(fs.owner, target, link) }

func (fs *FS) symlink(o owner, target, link string) error {
	switch {
	case target == "":
		return syscall.ENOENT
	case len(target) >= unix.PathMax:
		return syscall.ENAMETOOLONG
	}
	for i := 0; i < len(target); i++ {
		if target[i] == 0 {
			return syscall.EINVAL
		}
	}
	_, err := fs.create(link, newObject{
		mode:  unix.S_IFLNK | 0o777,
		owner: o,
		build: func(wd int, tmp string) error {
			return unix.Symlinkat(target, wd, tmp)
		},
	})
	return err
}

// Mknod creates a device, fifo or socket. mode carries the type
// (S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK; none means a character device) and
// permission bits. A 0/0 character device is refused with EPERM, as the
// kernel overlay does: it would be a whiteout.
func (fs *FS) Mknod(p string, mode uint32, major, minor uint32) error {
	return fs.mknod(fs.owner, p, mode, major, minor)
}

func (fs *FS) mknod(o owner, p string, mode uint32, major, minor uint32) error {
	typ := mode & unix.S_IFMT
	switch typ {
	case 0:
		typ = unix.S_IFCHR
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
	default:
		return syscall.EINVAL
	}
	dev := unix.Mkdev(major, minor)
	if typ == unix.S_IFCHR && dev == 0 {
		return syscall.EPERM
	}
	if typ == unix.S_IFIFO || typ == unix.S_IFSOCK {
		dev = 0
	}
	_, err := fs.create(p, newObject{
		mode:  typ | mode&0o7777,
		owner: o,
		build: func(wd int, tmp string) error {
			return unix.Mknodat(wd, tmp, typ|0o600, int(dev))
		},
	})
	return err
}

// Mkfifo creates a named pipe.
func (fs *FS) Mkfifo(p string, mode uint32) error {
	return fs.Mknod(p, unix.S_IFIFO|mode&0o7777, 0, 0)
}

// Socket creates a socket node.
func (fs *FS) Socket(p string) error { return fs.Mknod(p, unix.S_IFSOCK|0o755, 0, 0) }

// Remove removes a file or an empty directory, like os.Remove.
func (fs *FS) Remove(p string) error {
	fi, err := fs.Lstat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fs.Rmdir(p)
	}
	return fs.Unlink(p)
}

// Unlink removes a non-directory; EISDIR for a directory.
func (fs *FS) Unlink(p string) error {
	p = fs.respell(p)
	dirComps, name, err := splitTarget(p)
	if err == syscall.EBUSY {
		err = syscall.EISDIR
	}
	if err != nil {
		return err
	}
	if err := fs.copyUpCovered(append(slices.Clone(dirComps), name)); err != nil {
		return err
	}
	t, err := fs.lockTarget(dirComps, name, func(_ *dir, e *entry) error {
		switch {
		case !e.exists():
			return syscall.ENOENT
		case e.isDir():
			return syscall.EISDIR
		}
		return nil
	}, false)
	if err != nil {
		return err
	}
	defer t.release()
	if fs.inUpper(&t.e) && t.e.top().st.Nlink > 1 {
		// Its other names' link count and ctime change, in any directory.
		defer fs.listings.ForgetAll()
	}
	return fs.removeLocked(t)
}

// Rmdir removes a directory that is empty in the merged view (lower entries
// all whited out count as empty).
func (fs *FS) Rmdir(p string) error {
	p = fs.respell(p)
	dirComps, name, err := splitTarget(p)
	if err != nil {
		return err
	}
	t, err := fs.lockTarget(dirComps, name, func(d *dir, e *entry) error {
		switch {
		case !e.exists():
			return syscall.ENOENT
		case !e.isDir():
			return syscall.ENOTDIR
		}
		return fs.checkEmpty(d, e)
	}, true)
	if err != nil {
		return err
	}
	defer t.release()
	return fs.removeLocked(t)
}

// checkEmpty answers ENOTEMPTY unless the directory e in d shows no entries.
func (fs *FS) checkEmpty(d *dir, e *entry) error {
	child, err := fs.descend(d, e)
	if err != nil {
		return err
	}
	defer child.close()
	names, err := fs.visibleNames(child)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return syscall.ENOTEMPTY
	}
	return nil
}

// removeLocked removes t's entry from the union: an upper object is removed
// (or swapped with a whiteout in one rename when a lower object would show
// through), a lower-only object gets a whiteout. A directory's upper part,
// which may hold whiteouts, is moved into the work directory first and
// emptied there, while the lock is still held.
func (fs *FS) removeLocked(t *target) (err error) {
	wd, up, name := fs.work.FD(), fs.upperFD(t.d), t.e.name
	if !fs.inUpper(&t.e) {
		wo, err := fs.newWhiteout()
		if err != nil {
			return err
		}
		if err := unix.Renameat2(wd, wo, up, name, unix.RENAME_NOREPLACE); err != nil {
			fs.discard(wo)
			return layer.Errno(err)
		}
		// Counted, never refused: removing is how a full upper gets room again.
		fs.quota.reserveInodes(1, true)
		return nil
	}
	needWhiteout, err := fs.lowerPositive(t.d, name)
	if err != nil {
		return err
	}
	if fs.quota != nil {
		// Registered first so that it runs last, after any index cleanup.
		var uncount func()
		if t.e.isDir() {
			uncount = fs.quota.removingDir(up, name)
		} else {
			uncount = fs.quota.removing(up, name)
		}
		defer func() {
			if err == nil || !t.e.isDir() {
				uncount() // a non-directory's checks its link count itself
			}
			if err == nil && needWhiteout {
				fs.quota.reserveInodes(1, true)
			}
		}()
	}
	if id, ok := fs.removedID(t.d, &t.e); ok {
		defer func() {
			if err == nil {
				fs.moves.forget(id)
			}
		}()
	}
	isDir := t.e.isDir()
	if !isDir {
		after, release := fs.indexCleanup(up, name, t.e.top().st)
		defer release()
		if after != nil {
			defer func() {
				if err == nil {
					after()
				}
			}()
		}
	}
	if needWhiteout {
		wo, err := fs.newWhiteout()
		if err != nil {
			return err
		}
		if err := unix.Renameat2(wd, wo, up, name, unix.RENAME_EXCHANGE); err != nil {
			fs.discard(wo)
			return layer.Errno(err)
		}
		fs.discard(wo) // the removed object now
		if isDir {
			fs.listings.Invalidate(entryKey(&t.e))
		}
		return nil
	}
	if !isDir {
		return layer.Errno(unix.Unlinkat(up, name, 0))
	}
	defer fs.listings.Invalidate(entryKey(&t.e)) // its inode number may be reused
	err = unix.Unlinkat(up, name, unix.AT_REMOVEDIR)
	if err != unix.ENOTEMPTY && err != unix.EEXIST {
		return layer.Errno(err)
	}
	tmp := fs.work.TempName()
	if err := unix.Renameat2(up, name, wd, tmp, unix.RENAME_NOREPLACE); err != nil {
		return layer.Errno(err)
	}
	fs.discard(tmp)
	return nil
}

// copyUpCovered copies up the object at comps before a change that removes
// or covers its name when it is a lower non-directory with several links
// and the index is on, as the kernel does (ovl_nlink_start): its index
// entry then holds the union's link count of its other names. A name that
// is not there is left for the change to report.
func (fs *FS) copyUpCovered(comps []string) error {
	if fs.indexFD < 0 {
		return nil
	}
	d, e, err := fs.lookupIn(comps, false)
	if err != nil {
		return nil
	}
	need := fs.indexed(&e)
	d.close()
	if !need {
		return nil
	}
	_, _, err = fs.upperEntryClosed(comps)
	if err == syscall.ENOENT {
		return nil
	}
	return err
}

// hasOrigin reports the kernel's "origin" type: an upper object copied up
// from a lower one, or a merged directory. Moving such an object into a
// directory makes that directory impure.
func (fs *FS) hasOrigin(d *dir, e *entry) bool {
	if e.merged() {
		return true
	}
	if !fs.inUpper(e) {
		return false
	}
	has, _ := layer.HasXattr(fs.upperFD(d), e.name, fs.x.Origin())
	return has
}
