package billyunion

import (
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// setattr applies change to the upper copy of the object at p, copying it up
// first as the kernel does for any attribute change. check runs before any
// copy-up, so a refused change leaves the layers untouched.
func (fs *FS) setattr(p string, check func(e *entry) error, change func(dirfd int, name string) error) error {
	p = fs.respell(p)
	if !fs.hasUpper {
		return syscall.EROFS
	}
	comps, err := splitPath(p)
	if err != nil {
		return err
	}
	d, e, err := fs.lookup(p)
	if err != nil {
		return err
	}
	d.close()
	if check != nil {
		if err := check(&e); err != nil {
			return err
		}
	}
	if len(comps) == 0 {
		// The root's upper part always exists; name it through its
		// parent-free procfs path. No listing holds the root's attributes.
		return layer.Errno(change(fs.layers[0].Root, ""))
	}
	d, e, err = fs.upperEntry(comps)
	if err != nil {
		return err
	}
	defer d.close()
	err = layer.Errno(change(fs.upperFD(d), e.name))
	fs.forget(d) // the entry's attributes in the parent's listing
	if st, serr := layer.Lstat(fs.upperFD(d), e.name); serr == nil && st.Nlink > 1 && !layer.IsDir(&st) {
		fs.listings.ForgetAll() // its other names show the attributes too
	}
	return err
}

// Chmod sets permission and setuid/setgid/sticky bits. It does not follow
// symlinks: a symlink answers EOPNOTSUPP (fchmodat with
// AT_SYMLINK_NOFOLLOW), and nothing is copied up.
func (fs *FS) Chmod(p string, mode os.FileMode) error {
	return fs.setattr(p, func(e *entry) error {
		if e.isSymlink() {
			return syscall.EOPNOTSUPP
		}
		return nil
	}, func(dirfd int, name string) error {
		if name == "" {
			return unix.Chmod(layer.ProcPath(dirfd), unixPerm(mode))
		}
		return layer.Chmod(dirfd, name, unixPerm(mode))
	})
}

// Lchown changes owner and group of the object itself; -1 keeps a value.
func (fs *FS) Lchown(p string, uid, gid int) error {
	return fs.setattr(p, nil, func(dirfd int, name string) error {
		if name == "" {
			return unix.Chown(layer.ProcPath(dirfd), uid, gid)
		}
		return unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// Chown is Lchown: the union never follows symlinks stored in layers.
func (fs *FS) Chown(p string, uid, gid int) error { return fs.Lchown(p, uid, gid) }

// Chtimes sets access and modification times of the object itself (not a
// symlink's target). A zero time leaves that time unchanged.
func (fs *FS) Chtimes(p string, atime, mtime time.Time) error {
	ts := []unix.Timespec{timespec(atime), timespec(mtime)}
	return fs.setattr(p, nil, func(dirfd int, name string) error {
		if name == "" {
			return unix.UtimesNanoAt(unix.AT_FDCWD, layer.ProcPath(dirfd), ts, 0)
		}
		return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// Truncate sets the size of the regular file at p.
func (fs *FS) Truncate(p string, size int64) error {
	if size < 0 {
		return syscall.EINVAL
	}
	f, err := fs.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Listxattr lists the object's extended attributes, without the overlay's
// own (under either prefix).
func (fs *FS) Listxattr(p string) ([]string, error) {
	p = fs.respell(p)
	d, e, err := fs.lookup(p)
	if err != nil {
		return nil, err
	}
	defer d.close()
	dirfd, name := fs.realName(d, &e)
	names, err := layer.Listxattr(dirfd, name)
	if err != nil {
		return nil, layer.Errno(err)
	}
	return slices.DeleteFunc(names, copyup.IsPrivate), nil
}

// Getxattr reads one extended attribute; the overlay's own are ENODATA.
func (fs *FS) Getxattr(p, attr string) ([]byte, error) {
	if copyup.IsPrivate(attr) {
		return nil, syscall.ENODATA
	}
	d, e, err := fs.lookup(fs.respell(p))
	if err != nil {
		return nil, err
	}
	defer d.close()
	dirfd, name := fs.realName(d, &e)
	v, err := layer.Getxattr(dirfd, name, attr)
	return v, errnoOf(err)
}

// Setxattr sets one extended attribute (copying the object up); the
// overlay's own attributes cannot be set through the union (EPERM).
func (fs *FS) Setxattr(p, attr string, value []byte) error {
	if copyup.IsPrivate(attr) {
		return syscall.EPERM
	}
	return fs.setattr(p, nil, func(dirfd int, name string) error {
		return layer.Setxattr(dirfd, name, attr, value)
	})
}

// Removexattr removes one extended attribute (copying the object up).
func (fs *FS) Removexattr(p, attr string) error {
	if copyup.IsPrivate(attr) {
		return syscall.EPERM
	}
	return fs.setattr(p, nil, func(dirfd int, name string) error {
		return layer.Removexattr(dirfd, name, attr)
	})
}

// realName returns the directory descriptor and name of e's topmost part.
func (fs *FS) realName(d *dir, e *entry) (int, string) {
	if d == nil {
		return e.top().fd, ""
	}
	if e.index != nil {
		return fs.indexFD, e.index.name
	}
	return d.partFor(e.top().li).fd, e.name
}
