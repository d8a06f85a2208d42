package billyunion

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/go-git/go-billy/v5"
	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/readdircache"
)

// OpenFile opens the file at p. Opening for writing (or with O_TRUNC) copies
// a lower file up first; O_CREATE makes a new file in the upper layer when
// the name is free. Only regular files can be read or written: directories
// open read-only, symlinks answer ELOOP, devices, fifos and sockets EINVAL
// (the server must never read or write the host's devices through a layer).
func (fs *FS) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	return fs.openFile(fs.owner, p, flag, perm)
}

// openFile is OpenFile for a creator o.
func (fs *FS) openFile(o owner, p string, flag int, perm os.FileMode) (billy.File, error) {
	p = fs.respell(p)
	comps, err := splitPath(p)
	if err != nil {
		return nil, err
	}
	writing := flag&(os.O_WRONLY|os.O_RDWR) != 0 || flag&os.O_TRUNC != 0
	if writing && !fs.hasUpper {
		return nil, syscall.EROFS
	}
	for attempt := 0; attempt < maxRetries; attempt++ {
		f, err := fs.openOnce(o, p, comps, flag, perm, writing)
		if err != errRetry {
			return f, err
		}
	}
	return nil, syscall.EAGAIN
}

// openOnce is one attempt at OpenFile; errRetry means the name changed
// between the lookup and the open, and the lookup must be made again.
func (fs *FS) openOnce(o owner, p string, comps []string, flag int, perm os.FileMode, writing bool) (billy.File, error) {
	if flag&os.O_CREATE != 0 {
		f, err := fs.createFile(o, p, flag, perm)
		if err != syscall.EEXIST || flag&os.O_EXCL != 0 {
			return f, err
		}
	}
	d, e, err := fs.lookup(p)
	if err == syscall.ENOENT && flag&os.O_CREATE != 0 {
		return nil, errRetry // removed since create found it: create it then
	}
	if err != nil {
		return nil, err
	}
	defer d.close()
	st := e.topStat()
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		if writing {
			return nil, syscall.EISDIR
		}
	case unix.S_IFLNK:
		return nil, syscall.ELOOP
	default:
		return nil, syscall.EINVAL
	}
	sysFlags := flag &^ (os.O_CREATE | os.O_EXCL)
	if !writing {
		if fs.beforeOpen != nil {
			fs.beforeOpen(p)
		}
		dirfd, name := fs.realName(d, &e)
		f, err := layer.OpenSame(dirfd, name, sysFlags, st)
		if err != nil {
			return nil, openErr(err)
		}
		return fs.newFile(p, comps, f, fs.inUpper(&e)), nil
	}
	if len(comps) == 0 {
		return nil, syscall.EISDIR
	}
	ud, ue, err := fs.upperEntry(comps)
	if err == syscall.ENOENT && flag&os.O_CREATE != 0 {
		return nil, errRetry
	}
	if err != nil {
		return nil, err
	}
	defer ud.close()
	if fs.beforeOpen != nil {
		fs.beforeOpen(p)
	}
	// With a quota, O_TRUNC is the accounted truncate, which uncounts what it frees; a
	// read-only open that truncates (rare) uncounts the size it looked up.
	truncate := fs.quota != nil && sysFlags&os.O_TRUNC != 0 && sysFlags&(os.O_WRONLY|os.O_RDWR) != 0
	if truncate {
		sysFlags &^= os.O_TRUNC
	}
	f, err := layer.OpenSame(fs.upperFD(ud), ue.name, sysFlags, &ue.top().st)
	if err != nil {
		return nil, openErr(err)
	}
	if fs.quota != nil && !truncate && sysFlags&os.O_TRUNC != 0 && ue.top().st.Nlink > 0 {
		fs.quota.release(0, ue.top().st.Size)
	}
	key := dirKey(ud)
	uf := fs.newFile(p, comps, f, true)
	uf.parentKey = &key
	if truncate {
		if err := uf.Truncate(0); err != nil {
			uf.Close()
			return nil, err
		}
	}
	uf.changed() // O_TRUNC may have changed the size already
	return uf, nil
}

// openErr turns layer.OpenSame's errors into the union's.
func openErr(err error) error {
	if errors.Is(err, layer.ErrReplaced) {
		return errRetry
	}
	return layer.Errno(err)
}

// createFile makes a new regular file and returns it open with flag.
func (fs *FS) createFile(o owner, p string, flag int, perm os.FileMode) (billy.File, error) {
	if !fs.hasUpper {
		return nil, syscall.EROFS
	}
	comps, err := splitPath(p)
	if err != nil {
		return nil, err
	}
	var opened *os.File
	parentKey, err := fs.create(p, newObject{
		mode:  unix.S_IFREG | unixPerm(perm),
		owner: o,
		build: func(wd int, tmp string) error {
			access := flag & (os.O_WRONLY | os.O_RDWR | os.O_APPEND)
			f, err := layer.OpenFile(wd, tmp, access|unix.O_CREAT|unix.O_EXCL, 0o600)
			opened = f
			return err
		},
	})
	if err != nil {
		if opened != nil {
			opened.Close()
		}
		return nil, err
	}
	f := fs.newFile(p, comps, opened, true)
	f.parentKey = &parentKey
	return f, nil
}

// file is an open union file. A file opened read-only from a lower layer
// notices when any copy-up has happened since it was opened and, if its own
// object is now in the upper layer, switches to the upper copy, so no
// reader keeps seeing stale lower data after a copy-up. The common path
// costs one atomic load.
type file struct {
	fs    *FS
	name  string
	comps []string

	// parentKey, when set, names the parent's listing to invalidate when
	// a file opened for writing is closed (its size and times changed).
	parentKey *readdircache.Key

	mu      sync.Mutex
	f       *os.File
	retired []*os.File // replaced descriptors, closed on Close
	upper   bool
	epoch   uint64
	// ino is the upper descriptor's inode number once the quota needed it (quota.resize).
	ino atomic.Uint64
	// objOf is the descriptor objDev and objIno were fstat'ed from (LayerObject), nil
	// until asked; guarded by mu.
	objOf          *os.File
	objDev, objIno uint64
}

func (fs *FS) newFile(name string, comps []string, f *os.File, upper bool) *file {
	return &file{fs: fs, name: name, comps: comps, f: f, upper: upper, epoch: fs.copyUps.Load()}
}

// current returns the descriptor to use, switching to the upper copy when
// the object was copied up since the last look.
func (f *file) current() *os.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.upper || f.fs.copyUps.Load() == f.epoch || len(f.comps) == 0 {
		return f.f
	}
	f.epoch = f.fs.copyUps.Load()
	d, e, err := f.fs.lookup(f.name)
	if err != nil {
		return f.f
	}
	defer d.close()
	if (!f.fs.inUpper(&e) && e.index == nil) || e.topStat().Mode&unix.S_IFMT != unix.S_IFREG {
		return f.f
	}
	// An index entry is the upper copy of a lower name not copied up
	// itself: another name of the object was.
	dirfd, name := f.fs.realName(d, &e)
	nf, err := layer.OpenFile(dirfd, name, unix.O_RDONLY, 0)
	if err != nil {
		return f.f
	}
	if off, err := f.f.Seek(0, 1); err == nil {
		nf.Seek(off, 0)
	}
	f.retired = append(f.retired, f.f)
	f.f = nf
	f.upper = true
	return nf
}

func (f *file) Name() string { return f.name }

// LayerStat is fstat of the descriptor the file reads and writes through: the upper copy
// once the object has one. Its inode number is the layer's, not the union's.
func (f *file) LayerStat() (syscall.Stat_t, error) {
	var st syscall.Stat_t
	err := syscall.Fstat(int(f.current().Fd()), &st)
	return st, ioErr(err)
}

// LayerObject is the device and inode number of the layer object the file reads through
// now (LayerStat's), fstat'ed once per descriptor: a caller checking that a cached open
// file is still the object a lookup found pays no system call for it.
func (f *file) LayerObject() (dev, ino uint64, err error) {
	cur := f.current()
	f.mu.Lock()
	if f.objOf == cur {
		dev, ino = f.objDev, f.objIno
		f.mu.Unlock()
		return dev, ino, nil
	}
	f.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(cur.Fd()), &st); err != nil {
		return 0, 0, ioErr(err)
	}
	f.mu.Lock()
	f.objOf, f.objDev, f.objIno = cur, st.Dev, st.Ino
	f.mu.Unlock()
	return st.Dev, st.Ino, nil
}

// LayerFile is the descriptor the file reads through now: the upper copy once the object
// has one. It stays open until the file is closed (a replaced descriptor is retired, not
// closed), so a caller holding the file open may read it directly (splice).
func (f *file) LayerFile() *os.File { return f.current() }

func (f *file) Read(b []byte) (int, error) {
	n, err := f.current().Read(b)
	return n, ioErr(err)
}

func (f *file) ReadAt(b []byte, off int64) (int, error) {
	n, err := f.current().ReadAt(b, off)
	return n, ioErr(err)
}

func (f *file) Write(b []byte) (int, error) {
	cur := f.current()
	var n int
	var err error
	if q := f.fs.quota; q != nil && f.upper {
		n, err = q.resize(cur, &f.ino, -1, len(b), false, func() (int, error) { return cur.Write(b) })
	} else {
		n, err = cur.Write(b)
	}
	f.changed()
	return n, f.fs.quotaErr(ioErr(err), int64(len(b)))
}

func (f *file) WriteAt(b []byte, off int64) (int, error) {
	cur := f.current()
	var n int
	var err error
	if q := f.fs.quota; q != nil && f.upper && off >= 0 {
		n, err = q.resize(cur, &f.ino, off+int64(len(b)), len(b), false, func() (int, error) { return cur.WriteAt(b, off) })
	} else {
		n, err = cur.WriteAt(b, off)
	}
	f.changed()
	return n, f.fs.quotaErr(ioErr(err), int64(len(b)))
}

func (f *file) Seek(off int64, whence int) (int64, error) {
	n, err := f.current().Seek(off, whence)
	return n, ioErr(err)
}

func (f *file) Truncate(size int64) error {
	cur := f.current()
	var err error
	if q := f.fs.quota; q != nil && f.upper && size >= 0 {
		_, err = q.resize(cur, &f.ino, size, 0, true, func() (int, error) { return 0, cur.Truncate(size) })
	} else {
		err = cur.Truncate(size)
	}
	f.changed()
	return f.fs.quotaErr(ioErr(err), 0)
}

// changed drops the cached listings that show this file's size and times:
// its parent's, and every listing when the file has other names (hard
// links), which may sit in any directory. It runs after each write rather
// than at Close: a client listing the directory while the file is open (an
// NFS server keeps files open between WRITEs) must see the current size.
func (f *file) changed() {
	if f.parentKey == nil {
		return
	}
	f.fs.listings.Forget(*f.parentKey)
	if st, err := layer.Fstat(int(f.current().Fd())); err == nil && st.Nlink > 1 {
		f.fs.listings.ForgetAll()
	}
}

// Sync flushes the file to stable storage. (A delayed allocation refused then is the
// quota's too.)
func (f *file) Sync() error { return f.fs.quotaErr(ioErr(f.current().Sync()), 0) }

func (f *file) Lock() error {
	return ioErr(unix.Flock(int(f.current().Fd()), unix.LOCK_EX))
}

func (f *file) Unlock() error {
	return ioErr(unix.Flock(int(f.current().Fd()), unix.LOCK_UN))
}

func (f *file) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.retired {
		r.Close()
	}
	f.retired = nil
	return ioErr(f.f.Close())
}

// ioErr keeps io.EOF (callers test for it) and turns everything else into
// an errno.
func ioErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return layer.Errno(err)
}
