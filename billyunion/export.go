package billyunion

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// This file is the union's side of persistent object identity (the
// kernel's export.go): what an object is, independent of where it is now,
// and where to look for an object given what it is. Package handles turns
// identities into NFS file handles; the union only promises that
//
//   - Identify(path) names the object at path by an ObjectID that stays the
//     same across copy-up, rename, restart and other traffic, and
//   - the candidate paths FindDir, FindConnected and Locations return are
//     hints: callers confirm a candidate with Identify before using it, so
//     a stale or forged hint costs a lookup, never a wrong object.

// ObjectID is an object's persistent identity: a kernel file handle of the
// object it stems from, on one of the layers' filesystems. That object is
// the origin it was copied up from, else for a merged directory its topmost
// lower part, else the object itself (the same rule as inode numbers, so
// file ids and handles change together, that is never).
type ObjectID struct {
	FS     uint8  // filesystem index: the order in which layers (upper first) name new filesystems
	Type   int32  // kernel file handle type
	Handle []byte // kernel file handle bytes
}

// Equal reports whether two identities name the same object.
func (id ObjectID) Equal(o ObjectID) bool {
	return id.FS == o.FS && id.Type == o.Type && bytes.Equal(id.Handle, o.Handle)
}

// maxObjectHandle bounds the kernel handle bytes accepted anywhere
// (MAX_HANDLE_SZ is 128; real filesystems use 8-40).
const maxObjectHandle = 128

// AppendBinary appends the identity's canonical encoding:
// fs | type (4 bytes, big-endian) | length | handle bytes.
func (id ObjectID) AppendBinary(b []byte) []byte {
	b = append(b, id.FS)
	b = binary.BigEndian.AppendUint32(b, uint32(id.Type))
	b = append(b, byte(len(id.Handle)))
	return append(b, id.Handle...)
}

// Key is the canonical encoding as a string, for maps and file names.
func (id ObjectID) Key() string { return string(id.AppendBinary(nil)) }

// parseObjectID decodes AppendBinary's encoding from the front of b.
func parseObjectID(b []byte) (ObjectID, []byte, error) {
	if len(b) < 6 {
		return ObjectID{}, nil, syscall.EINVAL
	}
	n := int(b[5])
	if n == 0 || n > maxObjectHandle || len(b) < 6+n {
		return ObjectID{}, nil, syscall.EINVAL
	}
	id := ObjectID{FS: b[0], Type: int32(binary.BigEndian.Uint32(b[1:5])), Handle: bytes.Clone(b[6 : 6+n])}
	return id, b[6+n:], nil
}

// Identity is what Identify reports about an object.
type Identity struct {
	ID  ObjectID
	Dir bool
	Ino uint64 // the union inode number (the NFS fileid)
}

// Identify returns the identity of the object at p (Lstat semantics).
func (fs *FS) Identify(p string) (Identity, error) {
	d, e, err := fs.lookup(p)
	if err != nil {
		return Identity{}, err
	}
	defer d.close()
	id, err := fs.objectIDOf(d, &e)
	if err != nil {
		return Identity{}, err
	}
	return Identity{ID: id, Dir: e.isDir(), Ino: fs.ino.number(fs.identityOf(d, &e))}, nil
}

// EntryIdentity is Identify for an entry of a listing of the directory dir
// (a FileInfo from ReadDir or ListingByID), cached in the entry. An entry
// whose name now holds another object (or none) answers ENOENT: the
// listing is older than that change.
func (fs *FS) EntryIdentity(dir string, fi os.FileInfo) (Identity, error) {
	entry, ok := fi.(*fileInfo)
	if !ok {
		return Identity{}, syscall.EINVAL
	}
	if id := entry.id.Load(); id != nil {
		return *id, nil
	}
	p := entry.name
	if dir != "" && dir != "/" {
		p = dir + "/" + entry.name
	}
	id, err := fs.Identify(p)
	if err != nil {
		return Identity{}, err
	}
	if id.Ino != entry.st.Ino {
		return Identity{}, syscall.ENOENT
	}
	entry.id.Store(&id)
	return id, nil
}

// IdentifyWithParent is Identify that also returns the identity of the
// directory the object was found in (ok false for the root), from the same
// lookup.
func (fs *FS) IdentifyWithParent(p string) (obj Identity, parent ObjectID, ok bool, err error) {
	d, e, err := fs.lookup(p)
	if err != nil {
		return Identity{}, ObjectID{}, false, err
	}
	defer d.close()
	id, err := fs.objectIDOf(d, &e)
	if err != nil {
		return Identity{}, ObjectID{}, false, err
	}
	obj = Identity{ID: id, Dir: e.isDir(), Ino: fs.ino.number(fs.identityOf(d, &e))}
	if d == nil {
		return obj, ObjectID{}, false, nil
	}
	if parent, err = fs.dirObjectID(d); err != nil {
		return Identity{}, ObjectID{}, false, err
	}
	return obj, parent, true, nil
}

// objectIDOf computes the identity of entry e, a child of d (d is nil for
// the root, whose parts are in e).
func (fs *FS) objectIDOf(d *dir, e *entry) (ObjectID, error) {
	top := e.top()
	if d == nil {
		return fs.handleAt(top.li, fs.layers[top.li].Root, "")
	}
	if fs.isUpper(top.li) {
		rec, err := layer.Getxattr(fs.upperFD(d), e.name, fs.x.Origin())
		if err == nil {
			if id, ok := fs.originObjectID(rec, func() (identity, bool) { return fs.originIdentity(d, e) }); ok {
				return id, nil
			}
		} else if err != unix.ENODATA && err != unix.EOPNOTSUPP {
			return ObjectID{}, layer.Errno(err)
		}
		if e.isDir() && len(e.parts) > 1 {
			lp := &e.parts[1]
			return fs.handleAt(lp.li, d.partFor(lp.li).fd, e.name)
		}
	}
	return fs.handleAt(top.li, d.partFor(top.li).fd, e.name)
}

// dirObjectID is objectIDOf for a resolved directory, read from its own
// descriptors.
func (fs *FS) dirObjectID(d *dir) (ObjectID, error) {
	top := &d.parts[0]
	if len(d.path) == 0 {
		return fs.handleAt(top.li, top.fd, "")
	}
	if fs.isUpper(top.li) {
		rec, err := layer.Getxattr(top.fd, "", fs.x.Origin())
		if err == nil {
			fallback := func() (identity, bool) {
				if len(d.parts) > 1 {
					return identity{d.parts[1].st.Dev, d.parts[1].st.Ino}, true
				}
				return identity{}, false
			}
			if id, ok := fs.originObjectID(rec, fallback); ok {
				return id, nil
			}
		} else if err != unix.ENODATA && err != unix.EOPNOTSUPP {
			return ObjectID{}, layer.Errno(err)
		}
		if len(d.parts) > 1 {
			return fs.handleAt(d.parts[1].li, d.parts[1].fd, "")
		}
	}
	return fs.handleAt(top.li, top.fd, "")
}

// originObjectID turns an origin record into an identity. The record holds
// the handle; which filesystem it belongs to is found by decoding it (as
// inode numbering does), with resolveLower as the fallback when it cannot
// be decoded.
func (fs *FS) originObjectID(rec []byte, resolveLower func() (identity, bool)) (ObjectID, bool) {
	o, err := layer.DecodeOrigin(rec)
	if err != nil || len(o.FID) == 0 || len(o.FID) > maxObjectHandle {
		return ObjectID{}, false
	}
	low, ok := fs.ino.origins.Get(string(rec))
	if !ok {
		if low, ok = resolveLower(); !ok {
			return ObjectID{}, false
		}
	}
	idx, ok := fs.ino.fsIndex[low.dev]
	if !ok || idx > 255 {
		return ObjectID{}, false
	}
	return ObjectID{FS: uint8(idx), Type: o.Type, Handle: o.FID}, true
}

// handleAt names dir/name (dir itself for "") in layer li by its kernel
// file handle.
func (fs *FS) handleAt(li, dirFD int, name string) (ObjectID, error) {
	flags := 0
	if name == "" {
		flags = unix.AT_EMPTY_PATH
	}
	h, _, err := unix.NameToHandleAt(dirFD, name, flags)
	if err != nil {
		return ObjectID{}, layer.Errno(err)
	}
	b := h.Bytes()
	if len(b) == 0 || len(b) > maxObjectHandle {
		return ObjectID{}, syscall.EOVERFLOW
	}
	return ObjectID{FS: fs.fsOf(li), Type: h.Type(), Handle: bytes.Clone(b)}, nil
}

func (fs *FS) fsOf(li int) uint8 { return uint8(fs.ino.fsIndex[fs.layers[li].Dev]) }

// FindDir returns where the directory id should be: the kernel reconnects
// a directory handle to its one path, which is the directory's union path
// because directories never move between layers' namespaces (no
// redirects). A candidate only; ESTALE when there is none.
func (fs *FS) FindDir(id ObjectID) (string, error) {
	p, isDir, err := fs.pathByHandle(id)
	if err != nil {
		return "", err
	}
	if !isDir {
		return "", syscall.ESTALE
	}
	return p, nil
}

// FindConnected returns where the object id is when the kernel can tell
// from its handle alone: always for directories, for other objects only
// while their dentry is cached. A candidate only; ESTALE when there is
// none.
func (fs *FS) FindConnected(id ObjectID) (string, error) {
	p, _, err := fs.pathByHandle(id)
	return p, err
}

func (fs *FS) pathByHandle(id ObjectID) (string, bool, error) {
	var roots []int
	for li := range fs.layers {
		if fs.fsOf(li) == id.FS {
			roots = append(roots, li)
		}
	}
	if len(roots) == 0 || len(id.Handle) == 0 || len(id.Handle) > maxObjectHandle {
		return "", false, syscall.ESTALE
	}
	fd, err := unix.OpenByHandleAt(fs.layers[roots[0]].Root, unix.NewFileHandle(id.Type, id.Handle), unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	if err != nil {
		return "", false, syscall.ESTALE
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", false, syscall.ESTALE
	}
	abs, err := os.Readlink(layer.ProcPath(fd))
	if err != nil {
		return "", false, syscall.ESTALE
	}
	for _, li := range roots {
		if rel, ok := under(abs, fs.rootPaths[li]); ok {
			return rel, layer.IsDir(&st), nil
		}
	}
	return "", false, syscall.ESTALE
}

// under returns abs relative to root when it lies inside it.
func under(abs, root string) (string, bool) {
	if abs == root {
		return "", true
	}
	if root == "/" {
		return strings.TrimPrefix(abs, "/"), strings.HasPrefix(abs, "/") && len(abs) > 1
	}
	if strings.HasPrefix(abs, root+"/") {
		return abs[len(root)+1:], true
	}
	return "", false
}

// LayerSetID identifies the configuration: which layers, in which roles
// and order, by their roots' file handles and filesystem ids (not their
// paths, which may change). Two unions on the same layers agree on it.
func (fs *FS) LayerSetID() uint32 {
	h := fnv.New32a()
	var b []byte
	if fs.hasUpper {
		b = append(b, 'U')
	}
	for li, l := range fs.layers {
		id, err := fs.handleAt(li, l.Root, "")
		if err == nil {
			b = id.AppendBinary(b)
		}
		var sfs unix.Statfs_t
		if unix.Fstatfs(l.Root, &sfs) == nil {
			b = binary.BigEndian.AppendUint64(b, uint64(sfs.Type))
			b = binary.BigEndian.AppendUint32(b, uint32(sfs.Fsid.Val[0]))
			b = binary.BigEndian.AppendUint32(b, uint32(sfs.Fsid.Val[1]))
		}
		b = append(b, '|')
	}
	h.Write(b)
	return h.Sum32()
}

// checkHandles refuses layers whose filesystem cannot name objects by file
// handles: without them no identity survives a restart.
func (fs *FS) checkHandles() error {
	for li, l := range fs.layers {
		if _, err := fs.handleAt(li, l.Root, ""); err != nil {
			return fmt.Errorf("billyunion: layer %s: its filesystem gives no file handles (name_to_handle_at: %v); ovlnfs needs them for NFS handles that survive restarts: %w", fs.rootPaths[li], err, syscall.EOPNOTSUPP)
		}
	}
	return nil
}
