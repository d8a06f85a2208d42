// Package billyunion presents a stack of directory layers as one
// billy.Filesystem with Linux overlayfs semantics and on-disk format: N
// read-only lower layers (top-down, as in lowerdir=L1:L2), one writable
// upper layer and a work directory on the upper's filesystem. A layer
// written by this package can be mounted by the kernel overlay and the other
// way round.
//
// Files, one concern each (after the kernel's fs/overlayfs split):
//
//	fs.go        Options, New, the billy.Filesystem surface
//	names.go     path and name validation
//	namei.go     lookup: resolving paths to per-layer parts
//	readdir.go   merged directory listings
//	dir.go       namespace changes: create, mkdir, link, unlink, rmdir, rename
//	copy_up.go   driving the copyup package (parents first, one at a time)
//	attr.go      chmod, chown, utimes, xattrs
//	file.go      open files
//	inode.go     inode numbers (origin-preserving, layer id in high bits)
//	locks.go     per-directory locks
//
// The union never follows a symlink stored in a layer: every path is
// walked one component at a time with descriptors (package layer), Stat
// behaves as Lstat, and symlinks are returned to clients as symlinks.
// Errors are syscall.Errno values.
//
// # Lock order
//
// There is one kind of lock: a per-directory mutex keyed by the inode
// number of the directory's upper part (locks.go), so a rename of an
// ancestor neither loses nor confuses it. A namespace change locks the upper
// directories it changes (and the directory it removes or replaces), all
// at once, in ascending key order, after everything that can take long is
// done:
//
//  1. validate against a lock-free lookup (no copy-up for a failing call);
//  2. copy up what is needed, holding nothing (copyup builds the copy in
//     the work directory; only its final rename takes the destination
//     parent's lock, alone);
//  3. lock the directory set, look up again and re-validate under the
//     locks, retrying from 1 when the tree moved underneath;
//  4. make the change with single renames out of the work directory.
//
// No lock is held across copy-up data copying, and lookups and reads take
// no locks at all. A merged listing is built without locks too, with one
// exception: when concurrent changes spoiled several lock-free builds of
// it, the next is built under the directory's lock so that it finishes
// (readdir.go); that lock is taken alone. copyup's own mutex is a
// leaf (held only to register in-flight copy-ups).
package billyunion
