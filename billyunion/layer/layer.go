// Package layer gives access to one layer directory of a union through
// directory descriptors only, so that the kernel, not string handling,
// keeps every operation inside the layer.
//
// Every call takes a directory descriptor and a single name component that
// the caller has already validated (no "/", not "." or ".."). Nothing here
// ever follows a symlink stored in a layer: stats use AT_SYMLINK_NOFOLLOW,
// opens use O_NOFOLLOW, and a directory is only ever entered through an
// openat of one component with O_DIRECTORY|O_NOFOLLOW. A name therefore can
// neither climb out of the layer nor be redirected by a symlink placed in it.
//
// Extended attributes are reached with the *xattrat system calls (Linux 6.13)
// on the directory descriptor and the name, not followed; on older kernels,
// through the descriptor's /proc/self/fd magic link with the l*xattr calls:
// the link names the already-resolved directory, and the final component is a
// single validated name that is not followed.
//
// The package takes no locks.
package layer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Layer is one directory of the union, opened once.
type Layer struct {
	// Path is the directory as configured; used in messages only.
	Path string
	// Root is a descriptor of the layer's root directory, opened for
	// reading because open_by_handle_at refuses O_PATH mount descriptors.
	Root int
	// Dev is the device number of the filesystem holding the layer root.
	Dev uint64
}

// Open opens the layer directory at path. The path itself is resolved by the
// kernel normally (the operator chose it); everything below it is not.
func Open(path string) (*Layer, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("layer %s: %w", path, err)
	}
	return &Layer{Path: path, Root: fd, Dev: st.Dev}, nil
}

// Close releases the layer's root descriptor.
func (l *Layer) Close() error { return unix.Close(l.Root) }

// Errno reduces err to its syscall.Errno (EIO when it carries none); nil
// stays nil.
func Errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// Lstat stats name inside dir without following a final symlink.
func Lstat(dir int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := ignoringEINTR(func() error { return unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
	return st, err
}

// Fstat stats an open descriptor.
func Fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st, err
}

// OpenDir opens the directory name inside dir as an O_PATH descriptor,
// refusing anything that is not a directory, symlinks included.
func OpenDir(dir int, name string) (int, error) {
	return openat(dir, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// OpenDirForReading opens the directory name inside dir for getdents; an
// empty name opens dir itself again.
func OpenDirForReading(dir int, name string) (*os.File, error) {
	if name == "" {
		name = "."
	}
	fd, err := openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// OpenFile opens name inside dir with flags; O_NOFOLLOW is always added, so
// a symlink answers ELOOP.
func OpenFile(dir int, name string, flags int, mode uint32) (*os.File, error) {
	fd, err := openat(dir, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// ErrReplaced reports that a name no longer holds the object a lookup found
// there: another change replaced or removed it in between.
var ErrReplaced = errors.New("layer: the name holds another object now")

// OpenSame opens name inside dir with flags only if it still holds the
// regular file or directory want describes (same device and inode). The
// name is pinned with O_PATH and checked first, then reopened through
// procfs, so a whiteout, fifo, device or directory renamed onto the name
// since the lookup is never opened for I/O (opening a fifo would block, a
// whiteout answers ENXIO). A changed or vanished name gives ErrReplaced.
func OpenSame(dir int, name string, flags int, want *unix.Stat_t) (*os.File, error) {
	if name == "" {
		name = "."
	}
	pin, err := openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil, ErrReplaced
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(pin)
	st, err := Fstat(pin)
	if err != nil {
		return nil, err
	}
	typ := st.Mode & unix.S_IFMT
	if st.Dev != want.Dev || st.Ino != want.Ino || typ != want.Mode&unix.S_IFMT ||
		(typ != unix.S_IFREG && typ != unix.S_IFDIR) {
		return nil, ErrReplaced
	}
	fd, err := openat(unix.AT_FDCWD, ProcPath(pin), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

func openat(dir int, name string, flags int, mode uint32) (int, error) {
	var fd int
	err := ignoringEINTR(func() error {
		var err error
		fd, err = unix.Openat(dir, name, flags, mode)
		return err
	})
	return fd, err
}

// Readlink returns the target of the symlink name inside dir.
func Readlink(dir int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= unix.PathMax*4 {
			return "", syscall.ENAMETOOLONG
		}
		buf = make([]byte, len(buf)*2)
	}
}

// ProcPath names the object open as fd through procfs, for the calls that
// have no descriptor-based form; the kernel resolves it to exactly that
// object.
func ProcPath(fd int) string { return procPath(fd, "") }

// procPath names name inside the directory open as dir through procfs; an
// empty name names the directory itself.
func procPath(dir int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dir)
	if name == "" {
		return p
	}
	return p + "/" + name
}

// Getxattr reads attribute attr of name inside dir (of dir itself when name
// is empty). A missing attribute is ENODATA.
func Getxattr(dir int, name, attr string) ([]byte, error) {
	v, err := readXattr(func(buf []byte) (int, error) { return getxattrat(dir, name, attr, buf) })
	if err != unix.ENOSYS {
		return v, err
	}
	return getxattrProc(dir, name, attr)
}

// getxattrProc is Getxattr through procfs, for kernels without getxattrat.
func getxattrProc(dir int, name, attr string) ([]byte, error) {
	p := procPath(dir, name)
	if name == "" {
		// Follow the magic link to the directory itself.
		return readXattr(func(buf []byte) (int, error) { return unix.Getxattr(p, attr, buf) })
	}
	return readXattr(func(buf []byte) (int, error) { return unix.Lgetxattr(p, attr, buf) })
}

// readXattr reads a value with get, which fills buf (or with an empty buf reports the
// value's size), growing the buffer while the value outgrows it.
func readXattr(get func(buf []byte) (int, error)) ([]byte, error) {
	buf := make([]byte, 128)
	for {
		n, err := get(buf)
		if err == unix.ERANGE {
			size, err := get(nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, size+1)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// HasXattr reports whether attribute attr is set on name inside dir; a
// filesystem without xattr support simply has none.
func HasXattr(dir int, name, attr string) (bool, error) {
	_, err := Getxattr(dir, name, attr)
	switch err {
	case nil:
		return true, nil
	case unix.ENODATA, unix.EOPNOTSUPP:
		return false, nil
	}
	return false, err
}

// Setxattr sets attribute attr of name inside dir (dir itself when name is
// empty).
func Setxattr(dir int, name, attr string, value []byte) error {
	if err := setxattrat(dir, name, attr, value); err != unix.ENOSYS {
		return err
	}
	p := procPath(dir, name)
	if name == "" {
		return unix.Setxattr(p, attr, value, 0)
	}
	return unix.Lsetxattr(p, attr, value, 0)
}

// Removexattr removes attribute attr of name inside dir.
func Removexattr(dir int, name, attr string) error {
	if err := removexattrat(dir, name, attr); err != unix.ENOSYS {
		return err
	}
	p := procPath(dir, name)
	if name == "" {
		return unix.Removexattr(p, attr)
	}
	return unix.Lremovexattr(p, attr)
}

// Listxattr lists the attribute names of name inside dir.
func Listxattr(dir int, name string) ([]string, error) {
	list := func(buf []byte) (int, error) { return listxattrat(dir, name, buf) }
	size, err := list(nil)
	if err == unix.ENOSYS {
		p := procPath(dir, name)
		list = func(buf []byte) (int, error) { return unix.Llistxattr(p, buf) }
		if name == "" {
			list = func(buf []byte) (int, error) { return unix.Listxattr(p, buf) }
		}
		size, err = list(nil)
	}
	if err != nil {
		if err == unix.EOPNOTSUPP {
			return nil, nil
		}
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size*2)
	n, err := list(buf)
	if err != nil {
		return nil, err
	}
	var names []string
	start := 0
	for i := 0; i < n; i++ {
		if buf[i] == 0 {
			if i > start {
				names = append(names, string(buf[start:i]))
			}
			start = i + 1
		}
	}
	return names, nil
}

// SetTimes sets atime and mtime of name inside dir without following a
// symlink; an empty name sets the times of dir itself.
func SetTimes(dir int, name string, atime, mtime unix.Timespec) error {
	ts := []unix.Timespec{atime, mtime}
	if name == "" {
		return unix.UtimesNanoAt(unix.AT_FDCWD, procPath(dir, ""), ts, 0)
	}
	return unix.UtimesNanoAt(dir, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// IsWhiteout reports whether st describes a kernel overlay whiteout: a
// character device with device number 0/0.
func IsWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// IsDir reports whether st describes a directory.
func IsDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// ReadNames lists the names in the directory name inside dir (dir itself for
// an empty name), without "." and "..".
func ReadNames(dir int, name string) ([]string, error) {
	f, err := OpenDirForReading(dir, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, Errno(err)
	}
	return names, nil
}

// RemoveAll removes name inside dir and, for a directory, everything below
// it, never following a symlink. It is used only on entries the union has
// moved into its work directory.
func RemoveAll(dir int, name string) error {
	err := unix.Unlinkat(dir, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	sub, err := OpenDir(dir, name)
	if err != nil {
		return err
	}
	children, err := ReadNames(sub, "")
	if err == nil {
		for _, c := range children {
			if err = RemoveAll(sub, c); err != nil {
				break
			}
		}
	}
	unix.Close(sub)
	if err != nil {
		return err
	}
	err = unix.Unlinkat(dir, name, unix.AT_REMOVEDIR)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

func ignoringEINTR(f func() error) error {
	for {
		err := f()
		if err != unix.EINTR {
			return err
		}
	}
}

// Chmod sets the mode bits of name inside dir. A symlink answers
// EOPNOTSUPP: the object is pinned with an O_PATH|O_NOFOLLOW descriptor
// first, so a symlink swapped in between a check and the change can never
// redirect the chmod elsewhere.
func Chmod(dir int, name string, mode uint32) error {
	fd, err := openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.EOPNOTSUPP
	}
	return unix.Chmod(procPath(fd, ""), mode)
}
