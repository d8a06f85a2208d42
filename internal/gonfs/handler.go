package gonfs

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path"
	"strings"
	"syscall"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
)

// handler is the go-nfs Handler of the bridge. go-nfs calls Mount and then ToHandle for
// the mount's root; the other methods complete the interface for calls that go-nfs no
// longer receives.
type handler struct {
	union   *billyunion.FS
	handles *handles.Handles
	logger  *slog.Logger
}

// mountFlavors are offered in this order: AUTH_UNIX first because macOS and the BSDs
// refuse a server whose list holds AUTH_NULL alone, AUTH_NULL for clients that send no
// credentials.
var mountFlavors = [...]nfs.AuthFlavor{nfs.AuthFlavorUnix, nfs.AuthFlavorNull}

// Mount accepts "/" and any directory below it (libnfs URLs name the directory to list as
// the mount path); the root handle is then that directory's.
func (h *handler) Mount(_ context.Context, conn net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	remote := ""
	if conn != nil && conn.RemoteAddr() != nil {
		remote = conn.RemoteAddr().String()
	}
	dirpath := path.Clean("/" + string(req.Dirpath))
	// A fresh slice: go-nfs hands it to its XDR writer.
	flavors := append([]nfs.AuthFlavor(nil), mountFlavors[:]...)
	if dirpath == "/" {
		h.logger.Info("mount", "client", remote, "path", dirpath)
		return nfs.MountStatusOk, h.union, flavors
	}
	elems := strings.Split(strings.TrimPrefix(dirpath, "/"), "/")
	info, err := h.union.Lstat(path.Join(elems...))
	switch {
	case err != nil:
		h.logger.Warn("mount refused", "client", remote, "path", dirpath, "err", err)
		// go-nfs asks for the root handle of the returned filesystem even on failure, so
		// it must not be nil.
		return nfs.MountStatusErrNoEnt, h.union, nil
	case !info.IsDir():
		h.logger.Warn("mount refused: not a directory", "client", remote, "path", dirpath)
		return nfs.MountStatusErrNotDir, h.union, nil
	}
	h.logger.Info("mount", "client", remote, "path", dirpath)
	return nfs.MountStatusOk, &mountPoint{Filesystem: h.union, path: elems}, flavors
}

// mountPoint carries a mounted subdirectory from Mount to the ToHandle call go-nfs makes
// for the mount's root handle (with an empty path, whatever was mounted).
type mountPoint struct {
	billy.Filesystem
	path []string
}

// ToHandle makes handles with package handles. go-nfs has no way to fail here: an object
// that cannot be named gets a handle that answers STALE when used.
func (h *handler) ToHandle(f billy.Filesystem, p []string) []byte {
	if mp, ok := f.(*mountPoint); ok {
		p = append(append(make([]string, 0, len(mp.path)+len(p)), mp.path...), p...)
	}
	fh, err := h.handles.ToHandle(p)
	if err != nil {
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
			h.logger.Warn("cannot make a file handle", "path", path.Join(p...), "err", err)
		}
		return h.handles.Gone()
	}
	return fh
}

func (h *handler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	p, err := h.handles.FromHandle(fh)
	if err != nil {
		return nil, nil, err
	}
	return h.union, p, nil
}

func (h *handler) InvalidateHandle(_ billy.Filesystem, fh []byte) error {
	h.handles.Forget(fh)
	return nil
}

// HandleLimit is what go-nfs would cap a READDIR reply by; it lists no directory here.
func (h *handler) HandleLimit() int { return 1 << 20 }

// Change: go-nfs changes nothing through the bridge.
func (h *handler) Change(billy.Filesystem) billy.Change { return nil }

// FSStat: go-nfs answers no FSSTAT through the bridge.
func (h *handler) FSStat(context.Context, billy.Filesystem, *nfs.FSStat) error { return nil }
