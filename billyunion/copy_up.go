package billyunion

import (
	"errors"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// errRetry tells a caller that the tree changed under it and it should look
// up again; it never reaches a client.
var errRetry = errors.New("billyunion: retry")

func isRetry(err error) bool { return errors.Is(err, errRetry) || copyup.IsChanged(err) }

// copyUpChild copies the lower object e, a child of d, into d's upper part,
// which must exist. It holds no lock while copying; the final rename takes
// d's lock and re-checks that the name still resolves to the same lower
// object with nothing in the upper. Concurrent copy-ups of the same name run
// once. A return of errRetry means the name changed meanwhile.
func (fs *FS) copyUpChild(d *dir, e *entry) error {
	if !fs.dirHasUpper(d) {
		return errRetry
	}
	if fs.indexed(e) {
		return fs.copyUpIndexed(d, e)
	}
	return fs.copyUpPlain(d, e)
}

// copyUpPlain is copyUpChild without the index.
func (fs *FS) copyUpPlain(d *dir, e *entry) error {
	start := time.Now()
	top := *e.top()
	src := d.partFor(top.li)
	upper := d.parts[0]
	key := strconv.FormatUint(upper.st.Ino, 10) + "/" + e.name
	// unchanged checks that the name still holds the lower object we are
	// copying and nothing in the upper: before building (a copy-up that
	// finished just before this one needs no second copy) and again under
	// the parent's lock before placing.
	unchanged := func() error {
		if err := fs.checkAlive(d); err != nil {
			return err
		}
		now, err := fs.lookupChild(d, e.name)
		if err != nil {
			return err
		}
		if !now.exists() || fs.inUpper(&now) || now.top().li != top.li || now.top().st.Ino != top.st.Ino {
			return copyup.ErrChanged
		}
		return nil
	}
	source := copyup.Source{Dir: src.fd, Name: e.name, Stat: top.st}
	if fs.originUUIDs {
		source.UUID = fs.layerUUID[top.li]
	}
	if fs.isCommitted(top.li) {
		// Keep the identity the object had before its commit (stem.go).
		if rec, err := layer.Getxattr(src.fd, e.name, fs.x.Origin()); err == nil && len(rec) > 0 {
			source.Origin = rec
		}
	}
	// Counted before anything is copied: a copy-up that would pass the quota copies
	// nothing. The count is given back unless this call placed the copy.
	uncount, err := fs.quota.reserveObject(&top.st)
	if err != nil {
		return err
	}
	placed := false
	defer func() {
		if !placed {
			uncount()
		}
	}()
	err = fs.copier.Do(key, source, unchanged, func(tmp string) error {
		unlock := fs.locks.lock(upper.st.Ino)
		defer unlock()
		if err := unchanged(); err != nil {
			return err
		}
		if err := fs.copier.Place(tmp, upper.fd, e.name); err != nil {
			return layer.Errno(err)
		}
		placed = true
		fs.countCopyUp(&top.st, true, start)
		return nil
	})
	return fs.copyUpResult(d, e, err)
}

// copyUpIndexed is copyUpChild for a lower non-directory with several
// links, with the index on (index.go): when another name of the object was
// copied up already, the index entry is linked to this name; otherwise the
// copy is built, linked into the index and then placed at the name. Either
// way the union's link count does not change, and the nlink xattr says so.
func (fs *FS) copyUpIndexed(d *dir, e *entry) error {
	start := time.Now()
	top := *e.top()
	src := d.partFor(top.li)
	upper := d.parts[0]
	idx, err := fs.indexName(top.li, src.fd, e.name)
	if err != nil {
		return err
	}
	// unchanged is copyUpChild's check, and the index entry is still the
	// one (or still none) this copy-up was planned with.
	unchanged := func(linkUp bool) error {
		if err := fs.checkAlive(d); err != nil {
			return err
		}
		now, err := fs.lookupChild(d, e.name)
		if err != nil {
			return err
		}
		if !now.exists() || fs.inUpper(&now) || now.top().li != top.li || now.top().st.Ino != top.st.Ino || (now.index != nil) != linkUp {
			return copyup.ErrChanged
		}
		return nil
	}
	defer fs.listings.ForgetAll() // the other names' listings show the copy's ctime and count
	if idx == "" {
		// No handle, so no index: the copy-up of an unindexed overlay.
		return fs.copyUpPlain(d, e)
	}
	if e.index != nil {
		unlock := fs.locks.lock(upper.st.Ino)
		defer unlock()
		if err := unchanged(true); err != nil {
			return err
		}
		defer fs.lockIndex(idx)()
		ist, err := layer.Lstat(fs.indexFD, idx)
		if err != nil {
			return errRetry
		}
		shown := fs.unionNlink(fs.indexFD, idx, &ist, func() (uint64, bool) { return top.st.Nlink, true })
		// Relative to the lower count first, which the link does not
		// change, so that the count is right at every step (the kernel's
		// order); relative to the upper inode's once linked.
		if err := fs.setNlinkLower(fs.indexFD, idx, top.st.Nlink, shown); err != nil {
			return layer.Errno(err)
		}
		if err := fs.copier.PlaceLink(fs.indexFD, idx, upper.fd, e.name); err != nil {
			return layer.Errno(err)
		}
		ist.Nlink++
		if err := fs.setNlink(upper.fd, e.name, &ist, shown); err != nil {
			fs.log.Warn("index: recording the link count", "path", joinPath(append(d.path, e.name)), "err", err)
		}
		fs.countCopyUp(&top.st, false, start)
		return nil
	}
	key := strconv.FormatUint(upper.st.Ino, 10) + "/" + e.name
	source := copyup.Source{Dir: src.fd, Name: e.name, Stat: top.st, Indexed: true}
	if fs.originUUIDs {
		source.UUID = fs.layerUUID[top.li]
	}
	uncount, err := fs.quota.reserveObject(&top.st) // as in copyUpPlain
	if err != nil {
		return err
	}
	placed := false
	defer func() {
		if !placed {
			uncount()
		}
	}()
	wd := fs.work.FD()
	err = fs.copier.Do(key, source, func() error { return unchanged(false) }, func(tmp string) error {
		// No name is covered yet: the union's count is the lower one's.
		if err := fs.setNlinkLower(wd, tmp, top.st.Nlink, top.st.Nlink); err != nil {
			return layer.Errno(err)
		}
		unlock := fs.locks.lock(upper.st.Ino)
		defer unlock()
		if err := unchanged(false); err != nil {
			return err
		}
		defer fs.lockIndex(idx)()
		if err := unix.Linkat(wd, tmp, fs.indexFD, idx, 0); err != nil {
			if err == unix.EEXIST {
				return copyup.ErrChanged // another name's copy-up made it: link that
			}
			return layer.Errno(err)
		}
		if err := fs.copier.Place(tmp, upper.fd, e.name); err != nil {
			return layer.Errno(err)
		}
		placed = true
		if st, err := layer.Lstat(upper.fd, e.name); err == nil {
			if err := fs.setNlink(upper.fd, e.name, &st, top.st.Nlink); err != nil {
				fs.log.Warn("index: recording the link count", "path", joinPath(append(d.path, e.name)), "err", err)
			}
		}
		fs.countCopyUp(&top.st, true, start)
		return nil
	})
	return fs.copyUpResult(d, e, err)
}

// checkAlive fails with errRetry when d's upper directory was removed (a
// concurrent rmdir or rename-over moved it away); callers hold d's lock.
func (fs *FS) checkAlive(d *dir) error {
	st, err := layer.Fstat(d.parts[0].fd)
	if err != nil {
		return layer.Errno(err)
	}
	if st.Nlink == 0 {
		return errRetry
	}
	return nil
}

// upperEntry resolves p, copying it (and its parents) up when it lives in a
// lower layer only, and returns its parent (with an upper part) and the
// now-upper entry. Nothing is locked on return. The root is refused (its
// upper part always exists; callers handle it).
func (fs *FS) upperEntry(comps []string) (*dir, entry, error) {
	dirComps, name := comps[:len(comps)-1], comps[len(comps)-1]
	for attempt := 0; attempt < maxRetries; attempt++ {
		d, err := fs.resolveDir(dirComps, true)
		if err != nil {
			return nil, entry{}, err
		}
		e, err := fs.lookupChild(d, name)
		if err == nil && !e.exists() {
			err = syscall.ENOENT
		}
		if err == nil && fs.inUpper(&e) {
			return d, e, nil
		}
		if err == nil {
			err = fs.copyUpChild(d, &e)
		}
		d.close()
		if err != nil && !isRetry(err) {
			return nil, entry{}, err
		}
	}
	return nil, entry{}, syscall.EAGAIN
}

// copyUpResult is what a copy-up of e in d that ended with err answers: nil, a retry,
// or the failure as an errno, logged.
func (fs *FS) copyUpResult(d *dir, e *entry, err error) error {
	if err != nil && !isRetry(err) {
		err = fs.quotaErr(layer.Errno(err), e.top().st.Size)
		if err == syscall.EDQUOT {
			fs.log.Info("copy-up refused by the quota", "path", joinPath(append(d.path, e.name)))
			return err
		}
		fs.log.Error("copy-up failed", "path", joinPath(append(d.path, e.name)), "err", err)
		return err
	}
	return err
}

// countCopyUp counts a finished copy-up of the object of stat st, begun at start; copied
// says whether its data was copied (a link to an existing index entry copies none).
func (fs *FS) countCopyUp(st *unix.Stat_t, copied bool, start time.Time) {
	fs.copyUps.Add(1)
	if copied && st.Mode&unix.S_IFMT == unix.S_IFREG {
		fs.copyUpBytes.Add(uint64(st.Size))
	}
	fs.copyUpNanos.Add(int64(time.Since(start)))
}

// CopyUpStats is how many copy-ups the union has finished, the bytes of regular files
// they copied, and the time they took.
func (fs *FS) CopyUpStats() (count, bytes uint64, took time.Duration) {
	return fs.copyUps.Load(), fs.copyUpBytes.Load(), time.Duration(fs.copyUpNanos.Load())
}
