package billyunion

import (
	"errors"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// pair is two locked upper parent directories (possibly the same one) and
// the entries at the old and the new name.
type pair struct {
	od, nd *dir
	oe, ne entry
	unlock func()
}

func (p *pair) release() {
	p.od.fs.listings.EndChange(dirKey(p.od))
	p.nd.fs.listings.EndChange(dirKey(p.nd))
	if p.ne.isDir() {
		p.od.fs.listings.Invalidate(entryKey(&p.ne)) // replaced; its inode may be reused
	}
	p.unlock()
	p.od.close()
	p.nd.close()
}

type pairCheck func(p *pair) error

// lockPair is lockTarget for two names: resolve and check both, copy up the
// old object (it must be in the upper layer to be moved or linked) and both
// parent chains, then lock both parents (and the directory about to be
// replaced, if any) and check again.
func (fs *FS) lockPair(oldDir []string, oldName string, newDir []string, newName string, check pairCheck) (*pair, error) {
	if !fs.hasUpper {
		return nil, syscall.EROFS
	}
	for attempt := 0; attempt < maxRetries; attempt++ {
		p, err := fs.resolvePair(oldDir, oldName, newDir, newName, check)
		if err != nil {
			return nil, err
		}
		switch {
		case !fs.inUpper(&p.oe):
			p.od.close()
			p.nd.close()
			if _, _, err := fs.upperEntryClosed(append(slices.Clone(oldDir), oldName)); err != nil {
				return nil, err
			}
			continue
		case !fs.dirHasUpper(p.nd):
			p.od.close()
			p.nd.close()
			if err := fs.copyUpDir(newDir); err != nil {
				return nil, err
			}
			continue
		case fs.indexed(&p.ne):
			// Covered by the rename: copied up first (copyUpCovered).
			p.od.close()
			p.nd.close()
			if _, _, err := fs.upperEntryClosed(append(slices.Clone(newDir), newName)); err != nil {
				return nil, err
			}
			continue
		}
		keys := []uint64{p.od.parts[0].st.Ino, p.nd.parts[0].st.Ino}
		var replaced uint64
		if fs.inUpper(&p.ne) && p.ne.isDir() {
			replaced = p.ne.top().st.Ino
			keys = append(keys, replaced)
		}
		p.od.close()
		p.nd.close()
		unlock := fs.locks.lock(keys...)
		locked, err := fs.resolvePair(oldDir, oldName, newDir, newName, check)
		if err == nil && (locked.od.parts[0].st.Ino != keys[0] || !fs.dirHasUpper(locked.nd) ||
			locked.nd.parts[0].st.Ino != keys[1] || !fs.inUpper(&locked.oe)) {
			err = errRetry
		}
		if err == nil && fs.inUpper(&locked.ne) && locked.ne.isDir() && locked.ne.top().st.Ino != replaced {
			err = errRetry
		}
		if err != nil {
			if locked != nil {
				locked.od.close()
				locked.nd.close()
			}
			unlock()
			if isRetry(err) {
				continue
			}
			return nil, err
		}
		locked.unlock = unlock
		fs.listings.BeginChange(dirKey(locked.od), oldName)
		fs.listings.BeginChange(dirKey(locked.nd), newName)
		return locked, nil
	}
	return nil, syscall.EAGAIN
}

func (fs *FS) resolvePair(oldDir []string, oldName string, newDir []string, newName string, check pairCheck) (*pair, error) {
	od, err := fs.resolveDir(oldDir, false)
	if err != nil {
		return nil, err
	}
	nd, err := fs.resolveDir(newDir, false)
	if err != nil {
		od.close()
		return nil, err
	}
	p := &pair{od: od, nd: nd, unlock: func() {}}
	if p.oe, err = fs.lookupChild(od, oldName); err == nil {
		if p.ne, err = fs.lookupChild(nd, newName); err == nil {
			err = check(p)
		}
	}
	if err != nil {
		od.close()
		nd.close()
		return nil, err
	}
	return p, nil
}

// upperEntryClosed copies the object at comps up and releases what it
// resolved.
func (fs *FS) upperEntryClosed(comps []string) (*dir, entry, error) {
	d, e, err := fs.upperEntry(comps)
	if err == nil {
		d.close()
	}
	return nil, e, err
}

// sameUpperObject reports two names of one upper inode (hard links).
func (fs *FS) sameUpperObject(a, b *entry) bool {
	return fs.inUpper(a) && fs.inUpper(b) && a.top().st.Ino == b.top().st.Ino && a.top().st.Dev == b.top().st.Dev
}

// Rename moves oldpath to newpath, replacing a non-directory or an empty
// directory there. A directory with lower parts is copied up alone and
// given a redirect to where its lower parts are (redirect.go); without
// redirect_dir=on it answers EXDEV instead (clients then copy and delete,
// as they do with the kernel overlay).
func (fs *FS) Rename(oldpath, newpath string) error {
	oldpath, newpath = fs.respellRename(oldpath, newpath)
	oldDir, oldName, err := splitTarget(oldpath)
	if err != nil {
		return err
	}
	newDir, newName, err := splitTarget(newpath)
	if err != nil {
		return err
	}
	oldFull := append(slices.Clone(oldDir), oldName)
	newFull := append(slices.Clone(newDir), newName)
	if slices.Equal(oldFull, newFull) {
		_, err := fs.Lstat(oldpath)
		return err
	}
	check := func(p *pair) error {
		oe, ne := &p.oe, &p.ne
		switch {
		case !oe.exists():
			return syscall.ENOENT
		case isPrefix(oldFull, newFull):
			return syscall.EINVAL
		case isPrefix(newFull, oldFull):
			return syscall.ENOTEMPTY
		case fs.sameUpperObject(oe, ne) || fs.sameIndexedObject(oe, ne):
			return errSameObject
		case ne.exists() && oe.isDir() && !ne.isDir():
			return syscall.ENOTDIR
		case ne.exists() && !oe.isDir() && ne.isDir():
			return syscall.EISDIR
		case oe.isDir() && fs.hasLower(oe) && !fs.redirectCreate:
			return syscall.EXDEV
		case ne.isDir():
			return fs.checkEmpty(p.nd, ne)
		}
		return nil
	}
	p, err := fs.lockPair(oldDir, oldName, newDir, newName, check)
	if err == errSameObject {
		return nil
	}
	if err != nil {
		return err
	}
	defer p.release()
	return fs.renameLocked(p)
}

// errSameObject ends a rename between two names of one object: POSIX says
// nothing happens.
var errSameObject = errors.New("billyunion: both names are one object")

func isPrefix(prefix, full []string) bool {
	return len(full) > len(prefix) && slices.Equal(full[:len(prefix)], prefix)
}

func (fs *FS) renameLocked(p *pair) (err error) {
	for _, e := range []*entry{&p.oe, &p.ne} {
		if fs.inUpper(e) && !e.isDir() && e.top().st.Nlink > 1 {
			// A moved object's ctime and a replaced one's link count
			// show in the listings of its other names' directories.
			defer fs.listings.ForgetAll()
			break
		}
	}
	op, np := fs.upperFD(p.od), fs.upperFD(p.nd)
	oldName, newName := p.oe.name, p.ne.name
	whiteoutOld := false
	if fs.quota != nil {
		defer fs.countRename(p, np, newName, &whiteoutOld, &err)()
	}
	isDir := p.oe.isDir()
	redirected := isDir && fs.hasLower(&p.oe) // the kernel's merge-or-lower type
	samedir := p.od.parts[0].st.Ino == p.nd.parts[0].st.Ino
	if isDir && !redirected && !p.oe.opaque && len(p.nd.parts) > 1 {
		// A pure upper directory moving into a merged directory is made
		// opaque, so that no lower directory of the same name merges in.
		if err := layer.Setxattr(op, oldName, fs.x.Opaque(), []byte("y")); err != nil {
			return layer.Errno(err)
		}
	}
	if fs.inUpper(&p.ne) && p.ne.isDir() {
		if err := fs.emptyUpperDir(np, newName); err != nil {
			return err
		}
	}
	if !samedir && fs.hasOrigin(p.od, &p.oe) {
		if err := copyup.MarkImpure(np, fs.x); err != nil {
			return layer.Errno(err)
		}
	}
	whiteoutOld, err = fs.lowerPositive(p.od, oldName)
	if err != nil {
		return err
	}
	if fs.inUpper(&p.ne) && !p.ne.isDir() {
		after, release := fs.indexCleanup(np, newName, p.ne.top().st)
		defer release()
		if after != nil {
			defer func() {
				if err == nil {
					after()
				}
			}()
		}
	}
	if redirected {
		// Its lower parts stay where they are: the redirect says where.
		restore, err := fs.setMovedRedirect(p.od, &p.oe, samedir)
		if err != nil {
			return err
		}
		if err = fs.recordDirMove(p.od, &p.oe, p.nd, newName); err == nil {
			err = fs.moveUpper(p, op, np, whiteoutOld)
		}
		if err != nil {
			restore()
		}
		return err
	}
	if err := fs.recordMove(p.od, &p.oe, p.nd, newName); err != nil {
		return err
	}
	return fs.moveUpper(p, op, np, whiteoutOld)
}

// countRename prepares the quota's count for the rename p (quota.go): the returned
// function, deferred first so that it runs after any index cleanup, uncounts a replaced
// object whose last link went and the whiteouts the rename removed or left.
func (fs *FS) countRename(p *pair, np int, newName string, whiteoutOld *bool, err *error) func() {
	uncount := func() {}
	replacedDir := fs.inUpper(&p.ne) && p.ne.isDir()
	switch {
	case replacedDir:
		uncount = fs.quota.removingDir(np, newName)
	case fs.inUpper(&p.ne):
		uncount = fs.quota.removing(np, newName)
	}
	return func() {
		if *err != nil {
			// (A rename that fails after emptying the replaced directory of its
			// whiteouts leaves them counted until the next start.)
			if !replacedDir {
				uncount() // closes its descriptor; the link count shows nothing went
			}
			return
		}
		uncount()
		switch {
		case *whiteoutOld && !p.ne.upperWhiteout:
			fs.quota.reserveInodes(1, true) // counted, never refused, as for a removal
		case !*whiteoutOld && p.ne.upperWhiteout:
			fs.quota.release(1, 0)
		}
	}
}

// moveUpper makes the rename in the upper layer: one rename, leaving a
// whiteout at the old name when a lower object would show through there.
func (fs *FS) moveUpper(p *pair, op, np int, whiteoutOld bool) error {
	oldName, newName := p.oe.name, p.ne.name
	isDir := p.oe.isDir()
	switch {
	case whiteoutOld && p.ne.upperWhiteout:
		// Swap: the object goes to the new name, the whiteout to the old.
		return layer.Errno(unix.Renameat2(op, oldName, np, newName, unix.RENAME_EXCHANGE))
	case whiteoutOld:
		return fs.renameLeavingWhiteout(op, oldName, np, newName)
	case isDir && p.ne.upperWhiteout:
		if err := unix.Renameat2(op, oldName, np, newName, unix.RENAME_EXCHANGE); err != nil {
			return layer.Errno(err)
		}
		return layer.Errno(unix.Unlinkat(op, oldName, 0))
	}
	return layer.Errno(unix.Renameat(op, oldName, np, newName))
}

// renameLeavingWhiteout moves an upper object and leaves a whiteout at its
// old name, atomically with RENAME_WHITEOUT where the process may use it.
// Otherwise the object moves first and the whiteout follows, so a crash in
// between shows the lower object again beside the moved one: a duplicate,
// never a loss.
func (fs *FS) renameLeavingWhiteout(op int, oldName string, np int, newName string) error {
	err := unix.Renameat2(op, oldName, np, newName, unix.RENAME_WHITEOUT)
	if err != unix.EPERM && err != unix.EINVAL {
		return layer.Errno(err)
	}
	if err := unix.Renameat(op, oldName, np, newName); err != nil {
		return layer.Errno(err)
	}
	wo, err := fs.newWhiteout()
	if err != nil {
		return err
	}
	if err := unix.Renameat2(fs.work.FD(), wo, op, oldName, unix.RENAME_NOREPLACE); err != nil {
		fs.discard(wo)
		return layer.Errno(err)
	}
	return nil
}

// emptyUpperDir makes the upper directory name in parent empty at the layer
// level (it may hold whiteouts of lower entries) without a visible change:
// a fresh empty opaque directory with the same attributes takes its place in
// one exchange, and the old one is removed from the work directory.
func (fs *FS) emptyUpperDir(parent int, name string) error {
	names, err := layer.ReadNames(parent, name)
	if err != nil {
		return layer.Errno(err)
	}
	if len(names) == 0 {
		return nil
	}
	st, err := layer.Lstat(parent, name)
	if err != nil {
		return layer.Errno(err)
	}
	wd, tmp := fs.work.FD(), fs.work.TempName()
	if err := unix.Mkdirat(wd, tmp, 0o700); err != nil {
		return layer.Errno(err)
	}
	err = layer.Setxattr(wd, tmp, fs.x.Opaque(), []byte("y"))
	if err == nil {
		err = copyup.SetAttrs(wd, tmp, &st)
	}
	if err == nil {
		err = unix.Renameat2(wd, tmp, parent, name, unix.RENAME_EXCHANGE)
	}
	fs.discard(tmp)
	return layer.Errno(err)
}

// Link creates newpath as another name of the non-directory oldpath (which is
// copied up first, as the kernel does). An existing newpath answers EEXIST
// before a directory oldpath (the root included) answers EPERM, as in the
// kernel, which looks the new name up first.
func (fs *FS) Link(oldpath, newpath string) error {
	oldpath, newpath = fs.respell(oldpath), fs.respell(newpath)
	oldDir, oldName, err := splitTarget(oldpath)
	if err == syscall.EBUSY {
		return fs.linkRootError(newpath)
	}
	if err != nil {
		return err
	}
	newDir, newName, err := splitTarget(newpath)
	if err == syscall.EBUSY {
		err = syscall.EEXIST
	}
	if err != nil {
		return err
	}
	p, err := fs.lockPair(oldDir, oldName, newDir, newName, func(p *pair) error {
		switch {
		case !p.oe.exists():
			return syscall.ENOENT
		case p.ne.exists():
			return syscall.EEXIST
		case p.oe.isDir():
			return syscall.EPERM
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer p.release()
	op, np := fs.upperFD(p.od), fs.upperFD(p.nd)
	if fs.hasOrigin(p.od, &p.oe) {
		if err := copyup.MarkImpure(np, fs.x); err != nil {
			return layer.Errno(err)
		}
	}
	if err := fs.recordMove(p.od, &p.oe, p.nd, newName); err != nil {
		return err
	}
	// The link count shows in the listing of every directory holding a
	// name of the object; the two locked here are invalidated on release.
	if p.oe.top().st.Nlink > 1 {
		defer fs.listings.ForgetAll()
	}
	// The union's count and the upper inode's change together; no copy-up
	// of another name may read and rewrite the count meanwhile.
	if n := fs.indexOfUpper(op, oldName, &p.oe.top().st); n != "" {
		defer fs.lockIndex(n)()
		if err := fs.nlinkStart(op, oldName); err != nil {
			return layer.Errno(err)
		}
	}
	if !p.ne.upperWhiteout {
		return layer.Errno(unix.Linkat(op, oldName, np, newName, 0))
	}
	wd, tmp := fs.work.FD(), fs.work.TempName()
	if err := unix.Linkat(op, oldName, wd, tmp, 0); err != nil {
		return layer.Errno(err)
	}
	if err := unix.Renameat(wd, tmp, np, newName); err != nil {
		fs.discard(tmp)
		return layer.Errno(err)
	}
	fs.quota.release(1, 0) // the whiteout the new name replaced
	return nil
}

// linkRootError is what linking the root (a directory) to newpath answers:
// the new name's errors first (EEXIST for an existing one, ENOENT or
// ENOTDIR for its parent), then EPERM.
func (fs *FS) linkRootError(newpath string) error {
	_, err := fs.Lstat(newpath)
	switch {
	case err == nil:
		return syscall.EEXIST
	case err != syscall.ENOENT:
		return err
	}
	dirComps, _, err := splitTarget(newpath)
	if err != nil {
		return err
	}
	fi, err := fs.Lstat(joinPath(dirComps))
	switch {
	case err != nil:
		return err
	case !fi.IsDir():
		return syscall.ENOTDIR
	}
	return syscall.EPERM
}
