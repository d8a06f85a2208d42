package gonfs

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path"
	"syscall"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"

	"github.com/ovlnfs/ovlnfs/handles"
)

// handler is the go-nfs Handler of the bridge. go-nfs calls Mount and then ToHandle for
// the mount's root; the other methods complete the interface for calls that go-nfs no
// longer receives.
type handler struct {
	mount  func(dirpath string, remote net.Addr) (Target, error)
	logger *slog.Logger
}

// mountFlavors are offered in this order: AUTH_UNIX first because macOS and the BSDs
// refuse a server whose list holds AUTH_NULL alone, AUTH_NULL for clients that send no
// credentials.
var mountFlavors = [...]nfs.AuthFlavor{nfs.AuthFlavorUnix, nfs.AuthFlavorNull}

// Mount accepts an export's path and any directory below it (libnfs URLs name the
// directory to list as the mount path); the root handle is then that directory's.
func (h *handler) Mount(_ context.Context, conn net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	var remote net.Addr
	client := ""
	if conn != nil && conn.RemoteAddr() != nil {
		remote = conn.RemoteAddr()
		client = remote.String()
	}
	dirpath := path.Clean("/" + string(req.Dirpath))
	t, err := h.mount(dirpath, remote)
	if err != nil {
		h.logger.Warn("mount refused", "client", client, "path", dirpath, "err", err)
		// go-nfs asks for the root handle of the returned filesystem even on failure, so
		// it must not be nil; refused gives an empty one.
		if errors.Is(err, syscall.EACCES) {
			return nfs.MountStatusErrAcces, refused{}, nil
		}
		return nfs.MountStatusErrNoEnt, refused{}, nil
	}
	// A fresh slice: go-nfs hands it to its XDR writer.
	flavors := append([]nfs.AuthFlavor(nil), mountFlavors[:]...)
	mp := &mountPoint{Filesystem: t.Union, handles: t.Handles, path: t.Below}
	if len(t.Below) > 0 {
		info, err := t.Union.Lstat(path.Join(t.Below...))
		switch {
		case err != nil:
			h.logger.Warn("mount refused", "client", client, "path", dirpath, "err", err)
			return nfs.MountStatusErrNoEnt, refused{}, nil
		case !info.IsDir():
			h.logger.Warn("mount refused: not a directory", "client", client, "path", dirpath)
			return nfs.MountStatusErrNotDir, refused{}, nil
		}
	}
	h.logger.Info("mount", "client", client, "path", dirpath, "export", t.Export)
	return nfs.MountStatusOk, mp, flavors
}

// mountPoint carries what was mounted from Mount to the ToHandle call go-nfs makes for
// the mount's root handle (with an empty path, whatever was mounted).
type mountPoint struct {
	billy.Filesystem
	handles *handles.Handles
	path    []string
}

// refused is the filesystem of a refused mount: go-nfs asks its root handle and sends
// none.
type refused struct{ billy.Filesystem }

// ToHandle makes handles with package handles. go-nfs has no way to fail here: an object
// that cannot be named gets a handle that answers STALE when used.
func (h *handler) ToHandle(f billy.Filesystem, p []string) []byte {
	mp, ok := f.(*mountPoint)
	if !ok {
		return nil
	}
	p = append(append(make([]string, 0, len(mp.path)+len(p)), mp.path...), p...)
	fh, err := mp.handles.ToHandle(p)
	if err != nil {
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
			h.logger.Warn("cannot make a file handle", "path", path.Join(p...), "err", err)
		}
		return mp.handles.Gone()
	}
	return fh
}

// FromHandle: go-nfs resolves no handle through the bridge.
func (h *handler) FromHandle([]byte) (billy.Filesystem, []string, error) {
	return nil, nil, &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusStale}
}

func (h *handler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }

// HandleLimit is what go-nfs would cap a READDIR reply by; it lists no directory here.
func (h *handler) HandleLimit() int { return 1 << 20 }

// Change: go-nfs changes nothing through the bridge.
func (h *handler) Change(billy.Filesystem) billy.Change { return nil }

// FSStat: go-nfs answers no FSSTAT through the bridge.
func (h *handler) FSStat(context.Context, billy.Filesystem, *nfs.FSStat) error { return nil }
