package main

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
	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
)

// handleLimit is what go-nfs asks of HandleLimit(); it only uses it to cap the entries of
// one READDIR reply (at half of it), since handles here are not kept in a cache that
// could run out.
const handleLimit = 1 << 20

// newNFSHandler builds the go-nfs Handler that serves union through served (the
// filesystem go-nfs calls). It is the one place that decides how file handles are made:
// package handles derives them from the objects' persistent identities.
func newNFSHandler(union *billyunion.FS, served billy.Filesystem, statfsPath string, readOnly bool, handleCacheEntries int, logger *slog.Logger) (nfs.Handler, *handles.Handles, error) {
	hs, err := handles.New(union, handles.Options{CacheEntries: handleCacheEntries, Logger: logger.With("component", "handles")})
	if err != nil {
		return nil, nil, err
	}
	export := &exportHandler{union: served, statfsPath: statfsPath, readOnly: readOnly, logger: logger}
	return &rootParentHandler{inner: &identityHandler{exportHandler: export, handles: hs}}, hs, nil
}

// identityHandler gives go-nfs handles from package handles: persistent, stable across
// copy-up, rename and restart.
type identityHandler struct {
	*exportHandler
	handles *handles.Handles
}

func (h *identityHandler) ToHandle(_ billy.Filesystem, path []string) []byte {
	fh, err := h.handles.ToHandle(path)
	if err != nil {
		// go-nfs has no way to fail here. An entry of a listing snapshot that was removed
		// since gets a handle that answers STALE when used, as if it had been removed a
		// moment later; an empty handle would confuse clients.
		if err != syscall.ENOENT && err != syscall.ENOTDIR {
			h.logger.Warn("cannot make a file handle", "path", strings.Join(path, "/"), "err", err)
		}
		return h.handles.Gone()
	}
	return fh
}

func (h *identityHandler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	path, err := h.handles.FromHandle(fh)
	if err != nil {
		if errors.Is(err, handles.ErrBadHandle) {
			h.logger.Debug("malformed file handle", "len", len(fh))
		}
		return nil, nil, err
	}
	return h.union, path, nil
}

func (h *identityHandler) InvalidateHandle(_ billy.Filesystem, fh []byte) error {
	h.handles.Forget(fh)
	return nil
}

func (h *identityHandler) HandleLimit() int { return handleLimit }

// exportHandler answers MOUNT and FSSTAT for the single export "/".
type exportHandler struct {
	union      billy.Filesystem
	statfsPath string // the layer whose free space FSSTAT reports: upper, or top lower if read-only
	readOnly   bool
	logger     *slog.Logger
}

// mountFlavors are offered in this order: AUTH_UNIX first because macOS and the BSDs refuse
// a server whose list holds AUTH_NULL alone, AUTH_NULL for clients that send no credentials.
var mountFlavors = []nfs.AuthFlavor{nfs.AuthFlavorUnix, nfs.AuthFlavorNull}

func (h *exportHandler) Mount(ctx context.Context, conn net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	remote := ""
	if conn != nil {
		remote = conn.RemoteAddr().String()
	}
	// The union is exported as "/". A client may mount a directory below it (libnfs URLs
	// name the directory to list as the mount path); its root handle is then that
	// directory's.
	dirpath := path.Clean("/" + string(req.Dirpath))
	// Flavors are fresh copies: go-nfs hands the slice to its XDR writer.
	flavors := append([]nfs.AuthFlavor(nil), mountFlavors...)
	if dirpath == "/" {
		h.logger.Info("mount", "client", remote, "path", dirpath)
		return nfs.MountStatusOk, h.union, flavors
	}
	elems := strings.Split(strings.TrimPrefix(dirpath, "/"), "/")
	info, err := h.union.Stat(h.union.Join(elems...))
	switch {
	case err != nil:
		h.logger.Warn("mount refused", "client", remote, "path", dirpath, "err", err)
		// go-nfs asks for the root handle of the returned filesystem even on failure,
		// so it must not be nil.
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
// rootParentHandler turns it into the directory's path in the union; no handle ever
// refers to a mountPoint.
type mountPoint struct {
	billy.Filesystem
	path []string
}

func (h *exportHandler) Change(billy.Filesystem) billy.Change {
	if h.readOnly {
		return nil
	}
	if c, ok := h.union.(billy.Change); ok {
		return c
	}
	return nil
}

// FSStat reports the real free space of the filesystem that takes the writes, so `df` on
// the client means something.
func (h *exportHandler) FSStat(ctx context.Context, _ billy.Filesystem, s *nfs.FSStat) error {
	var st unix.Statfs_t
	if err := unix.Statfs(h.statfsPath, &st); err != nil {
		h.logger.Warn("statfs failed; reporting go-nfs defaults", "path", h.statfsPath, "err", err)
		return nil
	}
	bsize := uint64(st.Bsize)
	s.TotalSize = st.Blocks * bsize
	s.FreeSize = st.Bfree * bsize
	s.AvailableSize = st.Bavail * bsize
	s.TotalFiles = st.Files
	s.FreeFiles = st.Ffree
	s.AvailableFiles = st.Ffree
	if h.readOnly {
		s.AvailableSize = 0
		s.AvailableFiles = 0
	}
	return nil
}

// rootPath is how rootParentHandler presents the export root to go-nfs.
var rootPath = []string{"."}

// rootParentHandler makes LOOKUP of ".." at the export root return the root.
//
// go-nfs answers ACCES when the directory handle decodes to an empty path; it computes the
// parent as path[:len-1] otherwise. Presenting the root as the one-element path ["."] makes
// go-nfs take the ordinary branch: the parent of ["."] is [], whose handle is the root's.
// "." joins away in every path go-nfs builds (Join(".", "a") == "a"), and ToHandle strips it
// so the handle cache sees one spelling per object.
type rootParentHandler struct {
	inner nfs.Handler
}

func (h *rootParentHandler) Mount(ctx context.Context, conn net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	return h.inner.Mount(ctx, conn, req)
}

func (h *rootParentHandler) Change(f billy.Filesystem) billy.Change { return h.inner.Change(f) }

func (h *rootParentHandler) FSStat(ctx context.Context, f billy.Filesystem, s *nfs.FSStat) error {
	return h.inner.FSStat(ctx, f, s)
}

func (h *rootParentHandler) ToHandle(f billy.Filesystem, path []string) []byte {
	if mp, ok := f.(*mountPoint); ok {
		full := append(append(make([]string, 0, len(mp.path)+len(path)), mp.path...), path...)
		return h.inner.ToHandle(mp.Filesystem, withoutDots(full))
	}
	return h.inner.ToHandle(f, withoutDots(path))
}

func (h *rootParentHandler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	f, path, err := h.inner.FromHandle(fh)
	if err == nil && len(path) == 0 {
		path = append([]string(nil), rootPath...)
	}
	return f, path, err
}

func (h *rootParentHandler) InvalidateHandle(f billy.Filesystem, fh []byte) error {
	return h.inner.InvalidateHandle(f, fh)
}

func (h *rootParentHandler) HandleLimit() int { return h.inner.HandleLimit() }

func withoutDots(path []string) []string {
	clean := path
	for i, p := range path {
		if p == "." {
			clean = make([]string, 0, len(path)-1)
			clean = append(clean, path[:i]...)
			for _, q := range path[i+1:] {
				if q != "." {
					clean = append(clean, q)
				}
			}
			break
		}
	}
	return clean
}
