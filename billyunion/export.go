package billyunion

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// This file is the union's side of persistent object identity (the
// kernel's export.go): what an object is, independent of where it is now,
// and where to look for an object given what it is. Package handles turns
// ObjectIDs into NFS file handles; the union only promises that
//
//   - Identify(path) names the object at path by an ObjectID that stays the
//     same across copy-up, rename, restart and other traffic, and
//   - the candidate paths FindDir, FindConnected and Locations return are
//     hints: callers confirm a candidate with Identify before using it, so
//     a stale or forged hint costs a lookup, never a wrong object.

// ObjectID is an object's persistent identity: the kernel file handle of
// its stem (stem.go) on one of the layers' filesystems. Inode numbers come
// from the same stem, so a fileid and a handle change together, which is
// never.
type ObjectID struct {
	FS     uint8  // filesystem index: the order in which layers (upper first) name new filesystems
	Type   int32  // kernel file handle type
	Handle []byte // kernel file handle bytes
}

// Equal reports whether two ObjectIDs name the same object.
func (id ObjectID) Equal(o ObjectID) bool {
	return id.FS == o.FS && id.Type == o.Type && bytes.Equal(id.Handle, o.Handle)
}

// maxObjectHandle bounds the kernel handle bytes accepted anywhere
// (MAX_HANDLE_SZ is 128; real filesystems use 8-40).
const maxObjectHandle = 128

// An ObjectID has one binary form,
//
//	filesystem index (1 byte) | handle type | length n (1 byte) | n handle bytes
//
// written with the handle type in one of two widths. Both are persistent,
// so neither can change: the wide form (4 bytes, big-endian) is the
// union's own, in Key, the moves index's record names and contents and
// LayerSetID; the compact form (1 byte) is carried in NFS file handles
// (package handles), which must fit in 64 bytes. Kernel handle types are
// below 256 (the overlay's origin records store them in one byte too).
type typeWidth int

const (
	wideType    typeWidth = 4
	compactType typeWidth = 1
)

// head is the length of the fields before the handle bytes.
func (w typeWidth) head() int { return 2 + int(w) }

// encode appends id's binary form in width w; the caller checks that id
// fits it.
func (w typeWidth) encode(b []byte, id ObjectID) []byte {
	b = append(b, id.FS)
	if w == wideType {
		b = binary.BigEndian.AppendUint32(b, uint32(id.Type))
	} else {
		b = append(b, byte(id.Type))
	}
	b = append(b, byte(len(id.Handle)))
	return append(b, id.Handle...)
}

// decode reads an ObjectID in width w from the front of b and returns the
// rest; EINVAL unless b starts with one of 1 to maxObjectHandle handle
// bytes.
func (w typeWidth) decode(b []byte) (ObjectID, []byte, error) {
	head := w.head()
	if len(b) < head {
		return ObjectID{}, nil, syscall.EINVAL
	}
	n := int(b[head-1])
	if n == 0 || n > maxObjectHandle || len(b) < head+n {
		return ObjectID{}, nil, syscall.EINVAL
	}
	id := ObjectID{FS: b[0], Type: int32(b[1]), Handle: bytes.Clone(b[head : head+n])}
	if w == wideType {
		id.Type = int32(binary.BigEndian.Uint32(b[1:5]))
	}
	return id, b[head+n:], nil
}

// AppendBinary appends id's wide binary form (handle type in 4 bytes).
func (id ObjectID) AppendBinary(b []byte) []byte { return wideType.encode(b, id) }

// Key is the wide binary form as a string, for maps and file names.
func (id ObjectID) Key() string {
	var room KeyRoom
	return strings.Clone(id.KeyIn(&room))
}

// KeyRoom is memory for KeyIn, meant to live on the caller's stack: the usual handle
// fits, a bigger one makes KeyIn allocate.
type KeyRoom [96]byte

// KeyIn is Key in room's memory, for reading a map or cache keyed by Key (nothing may
// keep it): valid while room is and until room is used again. It spares the string Key
// allocates, once per call on the LOOKUP path.
func (id ObjectID) KeyIn(room *KeyRoom) string {
	b := id.AppendBinary(room[:0])
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// AppendCompact appends id's compact binary form (handle type in 1 byte),
// the one NFS file handles carry; EOVERFLOW when id does not fit it.
func (id ObjectID) AppendCompact(b []byte) ([]byte, error) {
	if id.Type < 0 || id.Type > 255 || len(id.Handle) == 0 || len(id.Handle) > maxObjectHandle {
		return b, syscall.EOVERFLOW
	}
	return compactType.encode(b, id), nil
}

// CompactSize is the length of id's compact binary form.
func (id ObjectID) CompactSize() int { return compactType.head() + len(id.Handle) }

// ParseCompactObjectID decodes AppendCompact's form from the front of b and
// returns the rest; EINVAL for anything else.
func ParseCompactObjectID(b []byte) (ObjectID, []byte, error) { return compactType.decode(b) }

// Identity is what Identify reports about an object: its ObjectID, whether
// it is a directory, and its inode number, the last two made from one stem.
type Identity struct {
	ID  ObjectID
	Dir bool
	Ino uint64 // the union inode number (the NFS fileid)
	// Info is the object's attributes as Lstat gives them, read by the same lookup, so a
	// caller that identified an object need not look it up again to stat it. Nil from
	// EntryIdentity, whose listing entry holds them.
	Info os.FileInfo
}

// Identify returns the identity of the object at p (Lstat semantics).
func (fs *FS) Identify(p string) (Identity, error) {
	p = fs.respell(p)
	gen := fs.readEvents()
	d, e, err := fs.lookupToIdentify(p)
	if err != nil {
		return Identity{}, err
	}
	defer d.close()
	return fs.identify(d, &e, gen)
}

// identify is Identify for entry e, a child of d (d is nil for the root), looked up at
// the directory cache's generation gen.
func (fs *FS) identify(d *dir, e *entry, gen uint64) (Identity, error) {
	k, err := fs.knownIdentity(fs.entryPlace(d, e), gen, func() (stem, error) { return fs.entryStem(d, e) })
	if err != nil {
		return Identity{}, err
	}
	return Identity{ID: k.id, Dir: e.isDir(), Ino: fs.ino.number(k.stem), Info: fs.fileInfoOf(d, e, stem{devIno: k.stem})}, nil
}

// knownIdentity applies the identity rule (stemOf, through stemFor) to the object found
// at pl and names its stem, remembered per layer object while no change in the layers
// touches it (dircache.go); gen is the cache's generation read before it was looked up.
func (fs *FS) knownIdentity(pl identityPlace, gen uint64, stemFor func() (stem, error)) (knownIdentity, error) {
	obj := devIno{pl.parts[0].st.Dev, pl.parts[0].st.Ino}
	cache, place, g := fs.dirs, pl, gen
	if lp, lg, ok := fs.lowerIdentityPlace(pl); ok {
		cache, place, g = fs.lower.dirs, lp, lg // found in a view (lowercache.go)
	}
	if k, ok := cache.identity(obj); ok {
		return k, nil
	}
	s, err := stemFor()
	if err != nil {
		return knownIdentity{}, err
	}
	id, err := fs.objectID(s)
	if err != nil {
		return knownIdentity{}, err
	}
	k := knownIdentity{stem: s.devIno, id: id}
	cache.putIdentity(obj, k, place, g)
	return k, nil
}

// EntryIdentity is Identify for an entry of a listing of the directory dir
// (a FileInfo from ReadDir or ListingByID), cached in the entry. An entry
// whose name now holds another object (or none) answers ENOENT: the
// listing is older than that change.
func (fs *FS) EntryIdentity(dir string, fi os.FileInfo) (Identity, error) {
	l := fs.ListedEntries(dir)
	defer l.Close()
	return l.Identity(fi)
}

// ListedEntries identifies entries of one listing of a directory together, as
// EntryIdentity does one (a READDIRPLUS page's): the layers' change events are read and
// the directory is resolved once for all of them, not once per entry. An identity is
// then as fresh as the first entry that needed them, which is within the one call that
// lists. Not for concurrent use; Close it when done.
type ListedEntries struct {
	fs  *FS
	dir string // respelled

	resolved bool   // gen, d and err are set
	gen      uint64 // the directory cache's generation, read before d was resolved
	d        *dir
	err      error // of resolving d
}

// ListedEntries prepares the identification of entries of a listing of dir.
func (fs *FS) ListedEntries(dir string) *ListedEntries {
	return &ListedEntries{fs: fs, dir: fs.respell(dir)}
}

// Close lets go of the directory.
func (l *ListedEntries) Close() {
	l.d.close()
	l.d = nil
}

// Identity is EntryIdentity of fi, an entry of the listing.
func (l *ListedEntries) Identity(fi os.FileInfo) (Identity, error) {
	entry, ok := fi.(*fileInfo)
	if !ok {
		return Identity{}, syscall.EINVAL
	}
	if id := entry.id.Load(); id != nil {
		return *id, nil
	}
	id, ok, err := l.identifyListed(entry)
	if !ok && err == nil {
		p := entry.name
		if l.dir != "" && l.dir != "/" {
			p = l.dir + "/" + entry.name
		}
		id, err = l.fs.Identify(p)
	}
	if err != nil {
		return Identity{}, err
	}
	if id.Ino != entry.st.Ino {
		return Identity{}, syscall.ENOENT
	}
	// The entry is its own Info; a cached Info would only cost memory per listed name.
	id.Info = nil
	entry.id.Store(&id)
	return id, nil
}

// identifyListed identifies a listing entry from the parts its lookup found, when no
// change in the layers touched it since (ok false otherwise: look it up again).
func (l *ListedEntries) identifyListed(fi *fileInfo) (Identity, bool, error) {
	if fi.gen == noGeneration || len(fi.parts) == 0 {
		return Identity{}, false, nil
	}
	fs := l.fs
	if !l.resolved {
		l.resolved = true
		l.gen = fs.readEvents()
		comps, err := splitPath(l.dir)
		if err == nil {
			l.d, err = fs.resolveDirIn(comps, false, true)
		}
		l.err = err
	}
	if l.err != nil {
		return Identity{}, false, l.err
	}
	d := l.d
	e := entryOf(fi.name, fi.parts)
	pl := fs.entryPlace(d, &e)
	cache, place := fs.dirs, pl
	if fi.ofLowers {
		// Listed through a view: d must still be one (this workspace's upper holds
		// nothing on the way), and the lower-only union's cache vouches.
		lp, _, ok := fs.lowerIdentityPlace(pl)
		if !ok {
			return Identity{}, false, nil
		}
		cache, place = fs.lower.dirs, lp
	}
	if !cache.unchangedSince(fi.gen, place) {
		return Identity{}, false, nil
	}
	k, err := fs.knownIdentity(pl, l.gen, func() (stem, error) { return fs.entryStem(d, &e) })
	if err != nil {
		return Identity{}, false, err
	}
	return Identity{ID: k.id, Dir: e.isDir(), Ino: fs.ino.number(k.stem)}, true, nil
}

// IdentifyWithParent is Identify that also returns the ObjectID of the
// directory the object was found in (ok false for the root), from the same
// lookup.
func (fs *FS) IdentifyWithParent(p string) (obj Identity, parent ObjectID, ok bool, err error) {
	p = fs.respell(p)
	gen := fs.readEvents()
	d, e, err := fs.lookupToIdentify(p)
	if err != nil {
		return Identity{}, ObjectID{}, false, err
	}
	defer d.close()
	if obj, err = fs.identify(d, &e, gen); err != nil {
		return Identity{}, ObjectID{}, false, err
	}
	if d == nil {
		return obj, ObjectID{}, false, nil
	}
	k, err := fs.knownIdentity(identityPlace{parts: d.parts, self: d}, gen, func() (stem, error) { return fs.dirStem(d) })
	if err != nil {
		return Identity{}, ObjectID{}, false, err
	}
	return obj, k.id, true, nil
}

// IdentifyIn identifies the directory at dir and the object at name in it with one
// lookup, the name's, which resolves the directory on its way: what an NFS LOOKUP
// needs. When the directory resolves and the name does not, parent is the directory's
// identity and err the name's (ENOENT); when the directory does not, parent is zero
// (its ID has no Handle) and err the directory's. The directory's attributes (parent's
// Info) are its top part's: the cache's while it vouches for them (no event named an
// entry of its parts since they were looked up), else from an fstat of the descriptor
// the lookup went through.
func (fs *FS) IdentifyIn(dir, name string) (parent, obj Identity, err error) {
	if name == "" || name == "." || name == ".." || strings.IndexByte(name, '/') >= 0 {
		return Identity{}, Identity{}, syscall.EINVAL // not an entry's name
	}
	gen := fs.readEvents()
	comps, err := splitPath(fs.respell(childKey(strings.Trim(dir, "/"), name)))
	if err != nil {
		return Identity{}, Identity{}, err
	}
	d, err := fs.parentToIdentify(comps)
	if err != nil {
		return Identity{}, Identity{}, err
	}
	defer d.close()
	e, err := fs.childToIdentify(d, comps)
	if err == nil {
		if obj, err = fs.identify(d, &e, gen); err != nil {
			return Identity{}, Identity{}, err
		}
	} else if err != syscall.ENOENT {
		return Identity{}, Identity{}, err
	}
	parent, perr := fs.identifyDir(d, gen)
	if perr != nil {
		return Identity{}, Identity{}, perr
	}
	return parent, obj, err
}

// identifyDir is Identify of the resolved directory d, its attributes fstat'ed afresh
// unless the cache vouches for them (see IdentifyIn).
func (fs *FS) identifyDir(d *dir, gen uint64) (Identity, error) {
	if len(d.parts) == 0 {
		return Identity{}, syscall.EIO
	}
	k, err := fs.knownIdentity(identityPlace{parts: d.parts, self: d}, gen, func() (stem, error) { return fs.dirStem(d) })
	if err != nil {
		return Identity{}, err
	}
	// A union directory's attributes are its top part's (link count aside, fileInfoOf's
	// rule), read here without an entry, which would copy d's parts. A directory the
	// cache holds with its parts' attributes exact (attrsExact) needs no fstat.
	name, st := "/", d.parts[0].st
	if len(d.path) > 0 {
		name = d.path[len(d.path)-1]
	}
	if !fs.attrsExact(d) {
		if st, err = layer.Fstat(d.parts[0].fd); err != nil {
			return Identity{}, layer.Errno(err)
		}
	}
	nlink := st.Nlink
	if len(d.parts) > 1 { // merged
		nlink = 1
	}
	info := fs.unionInfo(name, st, nlink, stem{devIno: k.stem})
	return Identity{ID: k.id, Dir: true, Ino: fs.ino.number(k.stem), Info: info}, nil
}

// attrsExact reports whether the resolved directory d is one a directory cache holds
// (the lower-only union's, for a view) with its parts' attributes as the disk has them,
// atime aside (dirCache.attrsExact). The caller's operation has read the events.
func (fs *FS) attrsExact(d *dir) bool {
	if d.base != nil {
		return d.base.cached.Load() && d.base.fs.dirs.attrsExact(d.base)
	}
	return d.cached.Load() && fs.dirs.attrsExact(d)
}

// entryPlace is where entry e, a child of d (d nil for the root, whose parts are in
// e), was found.
func (fs *FS) entryPlace(d *dir, e *entry) identityPlace {
	if d == nil {
		return identityPlace{parts: e.parts}
	}
	return identityPlace{parent: d, name: e.name, parts: e.parts}
}

// objectIDOf is the ObjectID of entry e, a child of d.
func (fs *FS) objectIDOf(d *dir, e *entry) (ObjectID, error) {
	s, err := fs.entryStem(d, e)
	if err != nil {
		return ObjectID{}, err
	}
	return fs.objectID(s)
}

// dirObjectID is the ObjectID of the resolved directory d.
func (fs *FS) dirObjectID(d *dir) (ObjectID, error) {
	s, err := fs.dirStem(d)
	if err != nil {
		return ObjectID{}, err
	}
	return fs.objectID(s)
}

// objectID names stem s by its kernel file handle: the one its origin
// record holds, else the one the kernel gives for it.
func (fs *FS) objectID(s stem) (ObjectID, error) {
	if len(s.origin) == 0 {
		if s.abs != nil {
			return fs.handleAtPath(s.li, s.abs)
		}
		return fs.handleAt(s.li, s.dirFD, s.name)
	}
	o, err := layer.DecodeOrigin(s.origin)
	idx, ok := fs.fsID(s.dev)
	if err != nil || !ok { // stemOf only makes a stem of a usable record
		return ObjectID{}, syscall.EIO
	}
	return ObjectID{FS: idx, Type: o.Type, Handle: o.FID}, nil
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

// handleIn is handleAt for a directory of the filesystem with index idx (a layer's or a
// former lower's).
func (fs *FS) handleIn(idx uint8, dirFD int, name string) (ObjectID, error) {
	h, _, err := unix.NameToHandleAt(dirFD, name, 0)
	if err != nil {
		return ObjectID{}, layer.Errno(err)
	}
	b := h.Bytes()
	if len(b) == 0 || len(b) > maxObjectHandle {
		return ObjectID{}, syscall.EOVERFLOW
	}
	return ObjectID{FS: idx, Type: h.Type(), Handle: bytes.Clone(b)}, nil
}

func (fs *FS) fsOf(li int) uint8 { return uint8(fs.ino.fsIndex[fs.layers[li].Dev]) }

// FindDir returns where the directory id should be: the kernel reconnects
// a directory handle to its one path in its layer, which is the
// directory's union path unless a directory on the way was renamed with a
// redirect (then FindMoved finds it). A candidate only; ESTALE when there
// is none.
func (fs *FS) FindDir(id ObjectID) (string, error) {
	p, isDir, _, err := fs.pathByHandle(id)
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
	p, _, _, err := fs.pathByHandle(id)
	return p, err
}

// handleRoot is the root of a layer, or of a former lower, a handle was found in.
type handleRoot struct {
	fd   int
	path string
}

// pathByHandle is where the kernel connects the object id in its layer:
// the path from the root of the layer (or the former lower,
// Options.FormerLowers) it lies in, and whether it is a directory.
func (fs *FS) pathByHandle(id ObjectID) (p string, isDir bool, in handleRoot, err error) {
	var roots []handleRoot
	for li, l := range fs.layers {
		if fs.fsOf(li) == id.FS {
			roots = append(roots, handleRoot{l.Root, fs.rootPaths[li]})
		}
	}
	for _, l := range fs.former {
		if uint8(fs.ino.fsIndex[l.Dev]) != id.FS {
			continue
		}
		if p, err := os.Readlink(layer.ProcPath(l.Root)); err == nil {
			roots = append(roots, handleRoot{l.Root, p})
		}
	}
	if len(roots) == 0 || len(id.Handle) == 0 || len(id.Handle) > maxObjectHandle {
		return "", false, handleRoot{}, syscall.ESTALE
	}
	fd, err := unix.OpenByHandleAt(roots[0].fd, unix.NewFileHandle(id.Type, id.Handle), unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	if err != nil {
		return "", false, handleRoot{}, syscall.ESTALE
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", false, handleRoot{}, syscall.ESTALE
	}
	abs, err := os.Readlink(layer.ProcPath(fd))
	if err != nil {
		return "", false, handleRoot{}, syscall.ESTALE
	}
	for _, r := range roots {
		if rel, ok := under(abs, r.path); ok {
			return rel, layer.IsDir(&st), r, nil
		}
	}
	return "", false, handleRoot{}, syscall.ESTALE
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
// paths, which may change), less the lowers committed from the upper
// (Options.CommittedLowers). Two unions on the same layers agree on it.
func (fs *FS) LayerSetID() uint32 {
	h := fnv.New32a()
	var b []byte
	if fs.hasUpper {
		b = append(b, 'U')
	}
	add := func(l *layer.Layer) {
		if lh, _, err := unix.NameToHandleAt(l.Root, "", unix.AT_EMPTY_PATH); err == nil {
			b = ObjectID{FS: uint8(fs.ino.fsIndex[l.Dev]), Type: lh.Type(), Handle: lh.Bytes()}.AppendBinary(b)
		}
		var sfs unix.Statfs_t
		if unix.Fstatfs(l.Root, &sfs) == nil {
			b = binary.BigEndian.AppendUint64(b, uint64(sfs.Type))
			b = binary.BigEndian.AppendUint32(b, uint32(sfs.Fsid.Val[0]))
			b = binary.BigEndian.AppendUint32(b, uint32(sfs.Fsid.Val[1]))
		}
		b = append(b, '|')
	}
	for li, l := range fs.layers {
		if first := btoi(fs.hasUpper); li >= first && li < first+fs.committed {
			continue
		}
		add(l)
	}
	// Lowers a flattened commit replaced count where they stood (Options.FormerLowers),
	// committed ones not, as before.
	for _, l := range fs.former[fs.formerCommitted:] {
		add(l)
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

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
