package billyunion

import (
	"os"

	"github.com/go-git/go-billy/v5"
	"golang.org/x/sys/unix"
)

// owner is who creates an object: its uid, and its gid unless the parent
// directory is setgid.
type owner struct{ uid, gid int }

// Caller is the union as one client user sees it: objects it creates are
// owned by that user's uid and gid, as the kernel gives a new file the
// creating process's fsuid and fsgid. Everything else is the shared
// union's. A Caller is cheap: make one per request.
type Caller struct {
	*FS
	o owner
}

// As returns the union for a caller with uid and gid. Only a server
// running as root can give objects away; otherwise creating answers EPERM.
func (fs *FS) As(uid, gid uint32) *Caller {
	return &Caller{FS: fs, o: owner{uid: int(uid), gid: int(gid)}}
}

var _ billy.Filesystem = (*Caller)(nil)

// OpenFile is FS.OpenFile, creating as the caller.
func (c *Caller) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	return c.FS.openFile(c.o, p, flag, perm)
}

// Create is FS.Create, as the caller.
func (c *Caller) Create(p string) (billy.File, error) {
	return c.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// Mkdir is FS.Mkdir, as the caller.
func (c *Caller) Mkdir(p string, perm os.FileMode) error { return c.FS.mkdir(c.o, p, perm) }

// MkdirAll is FS.MkdirAll, as the caller.
func (c *Caller) MkdirAll(p string, perm os.FileMode) error { return c.FS.mkdirAll(c.o, p, perm) }

// Symlink is FS.Symlink, as the caller.
func (c *Caller) Symlink(target, link string) error { return c.FS.symlink(c.o, target, link) }

// Mknod is FS.Mknod, as the caller.
func (c *Caller) Mknod(p string, mode uint32, major, minor uint32) error {
	return c.FS.mknod(c.o, p, mode, major, minor)
}

// Mkfifo is FS.Mkfifo, as the caller.
func (c *Caller) Mkfifo(p string, mode uint32) error {
	return c.Mknod(p, unix.S_IFIFO|mode&0o7777, 0, 0)
}

// Socket is FS.Socket, as the caller.
func (c *Caller) Socket(p string) error { return c.Mknod(p, unix.S_IFSOCK|0o755, 0, 0) }
