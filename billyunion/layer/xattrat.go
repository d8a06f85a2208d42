package layer

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The *xattrat system calls (Linux 6.13) reach an attribute of a name inside a directory
// descriptor directly. The procfs route the rest of this package falls back to walks
// /proc/self/fd/N on every call, which the profile of a metadata-heavy NFS workload
// showed at 15% of the server's CPU, most of it in procfs lookups. On an older kernel
// the call answers ENOSYS and the procfs route is taken.

// xattrArgs is the kernel's struct xattr_args.
// value is a Go pointer, not an integer, so that the buffer it points to is kept in place
// and alive for the call. The layout matches the kernel's where pointers are 64-bit; the
// assertion below stops a build where it would not.
type xattrArgs struct {
	value unsafe.Pointer
	size  uint32
	flags uint32 // setxattr's XATTR_CREATE/XATTR_REPLACE
}

var _ = [1]struct{}{}[unsafe.Sizeof(xattrArgs{})-16]

// atPath is the path the calls are given for name inside dir: name itself, not followed
// (AT_SYMLINK_NOFOLLOW), or "." for dir itself when name is empty. Not AT_EMPTY_PATH:
// that takes the descriptor as an open file, and the union's directory descriptors are
// O_PATH ones (EBADF).
func atPath(name string) (*byte, error) {
	if name == "" {
		name = "."
	}
	return unix.BytePtrFromString(name)
}

const atFlags = unix.AT_SYMLINK_NOFOLLOW

// atNames converts the path for name and the attribute's name for a system call.
func atNames(name, attr string) (path, attrp *byte, err error) {
	if path, err = atPath(name); err == nil {
		attrp, err = unix.BytePtrFromString(attr)
	}
	return path, attrp, err
}

func bufAddr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// getxattrat reads attr of name inside dir into buf (with an empty buf: the value's
// size).
func getxattrat(dir int, name, attr string, buf []byte) (int, error) {
	path, attrp, err := atNames(name, attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{value: bufAddr(buf), size: uint32(len(buf))}
	n, _, errno := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(path)), atFlags,
		uintptr(unsafe.Pointer(attrp)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// setxattrat sets attr of name inside dir.
func setxattrat(dir int, name, attr string, value []byte) error {
	path, attrp, err := atNames(name, attr)
	if err != nil {
		return err
	}
	args := xattrArgs{value: bufAddr(value), size: uint32(len(value))}
	_, _, errno := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(path)), atFlags,
		uintptr(unsafe.Pointer(attrp)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if errno != 0 {
		return errno
	}
	return nil
}

// removexattrat removes attr of name inside dir.
func removexattrat(dir int, name, attr string) error {
	path, attrp, err := atNames(name, attr)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(path)), atFlags,
		uintptr(unsafe.Pointer(attrp)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// listxattrat lists the attribute names of name inside dir into buf (with an empty buf:
// the list's size).
func listxattrat(dir int, name string, buf []byte) (int, error) {
	path, err := atPath(name)
	if err != nil {
		return 0, err
	}
	n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(path)), atFlags,
		uintptr(bufAddr(buf)), uintptr(len(buf)), 0)
	runtime.KeepAlive(buf)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
