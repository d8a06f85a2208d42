package nfs3

import (
	"os"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// servedAs is the principal a call is served as under grant: its credential squashed
// (clients.Grant.Map), and a call without one (AUTH_NONE) served as the anonymous user,
// checked like any other, as knfsd serves it.
func servedAs(grant clients.Grant, cred oncrpc.Credential) principal {
	id := grant.Map(clients.Identity{Anonymous: !cred.Unix, UID: cred.UID, GID: cred.GID, Groups: cred.Groups})
	return principal{oncrpc.Credential{Unix: true, UID: id.UID, GID: id.GID, Groups: id.Groups}}
}

// readOnlyNamespace is a writable union as a client with a read-only grant sees it:
// every change answers EROFS, as on a read-only union.
type readOnlyNamespace struct{ namespace }

func (readOnlyNamespace) Rename(string, string) error                { return syscall.EROFS }
func (readOnlyNamespace) Unlink(string) error                        { return syscall.EROFS }
func (readOnlyNamespace) Rmdir(string) error                         { return syscall.EROFS }
func (readOnlyNamespace) Mkdir(string, os.FileMode) error            { return syscall.EROFS }
func (readOnlyNamespace) Symlink(string, string) error               { return syscall.EROFS }
func (readOnlyNamespace) Mknod(string, uint32, uint32, uint32) error { return syscall.EROFS }
func (readOnlyNamespace) Link(string, string) error                  { return syscall.EROFS }
func (readOnlyNamespace) Chmod(string, os.FileMode) error            { return syscall.EROFS }
func (readOnlyNamespace) Lchown(string, int, int) error              { return syscall.EROFS }
func (readOnlyNamespace) Chtimes(string, time.Time, time.Time) error { return syscall.EROFS }
func (readOnlyNamespace) Truncate(string, int64) error               { return syscall.EROFS }

func (n readOnlyNamespace) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return nil, syscall.EROFS
	}
	return n.namespace.OpenFile(p, flag, perm)
}
