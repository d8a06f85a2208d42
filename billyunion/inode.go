package billyunion

import (
	"encoding/binary"
	"hash/fnv"
	"math/bits"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// Inode numbers follow the kernel's xino idea. An object is numbered by its
// identity: the origin it was copied up from (so copy-up does not change
// it), else for a merged directory its topmost lower part, else itself.
// Identities are (device, inode) pairs; each distinct layer filesystem gets
// a small index carried in the top bits, so numbers from different
// filesystems never collide. With every layer on one filesystem the index
// takes no bits and numbers are the real inode numbers, as in the kernel.
type inodes struct {
	fsIndex map[uint64]uint64 // device -> filesystem index (upper's is 0)
	fsBits  uint
	// decodeFDs holds one layer root per distinct lower filesystem, for
	// decoding origin handles.
	decodeFDs []int
	// origins caches decoded origin records -> identity.
	origins *lru.Cache[string, identity]
}

type identity struct{ dev, ino uint64 }

func newInodes(ls []*layer.Layer, upperFirst bool) *inodes {
	in := &inodes{fsIndex: map[uint64]uint64{}}
	lowerSeen := map[uint64]bool{}
	for i, l := range ls {
		if _, ok := in.fsIndex[l.Dev]; !ok {
			in.fsIndex[l.Dev] = uint64(len(in.fsIndex))
		}
		if (i > 0 || !upperFirst) && !lowerSeen[l.Dev] {
			lowerSeen[l.Dev] = true
			in.decodeFDs = append(in.decodeFDs, l.Root)
		}
	}
	if n := len(in.fsIndex); n > 1 {
		in.fsBits = uint(bits.Len(uint(n - 1)))
	}
	in.origins, _ = lru.New[string, identity](1 << 16)
	return in
}

// number maps an identity to the union's inode number.
func (in *inodes) number(id identity) uint64 {
	if in.fsBits == 0 {
		return id.ino
	}
	idx, ok := in.fsIndex[id.dev]
	if ok && id.ino>>(64-in.fsBits) == 0 {
		return id.ino | idx<<(64-in.fsBits)
	}
	// An inode number too wide for the index bits, or a device outside
	// the layers: hash, with every index bit set so that it stays clear of
	// the numbers above (index all-ones is unused unless the filesystem
	// count is an exact power of two, where collisions become possible;
	// documented in docs/semantics.md).
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], id.dev)
	binary.LittleEndian.PutUint64(b[8:], id.ino)
	h.Write(b[:])
	mask := ^uint64(0) << (64 - in.fsBits)
	return h.Sum64() | mask
}

// identityOf finds the identity of entry e, a child of d (d is nil for the
// root, whose parts are in e).
func (fs *FS) identityOf(d *dir, e *entry) identity {
	top := e.top()
	if d == nil {
		return identity{top.st.Dev, top.st.Ino} // the root is its top layer's root, as in the kernel
	}
	if fs.isUpper(top.li) {
		if id, ok := fs.originIdentity(d, e); ok {
			return id
		}
		if e.isDir() && len(e.parts) > 1 {
			lp := &e.parts[1]
			return identity{lp.st.Dev, lp.st.Ino}
		}
	}
	return identity{top.st.Dev, top.st.Ino}
}

// originIdentity reads and decodes the origin xattr of the upper object.
func (fs *FS) originIdentity(d *dir, e *entry) (identity, bool) {
	rec, err := layer.Getxattr(fs.upperFD(d), e.name, fs.x.Origin())
	if err != nil {
		return identity{}, false
	}
	if id, ok := fs.ino.origins.Get(string(rec)); ok {
		return id, true
	}
	o, err := layer.DecodeOrigin(rec)
	if err == nil {
		wantType := e.top().st.Mode & unix.S_IFMT
		for _, fd := range fs.ino.decodeFDs {
			st, err := layer.StatOrigin(fd, o)
			if err != nil || st.Mode&unix.S_IFMT != wantType {
				continue
			}
			if _, ok := fs.ino.fsIndex[st.Dev]; !ok {
				continue
			}
			id := identity{st.Dev, st.Ino}
			fs.ino.origins.Add(string(rec), id)
			return id, true
		}
	}
	// Handles cannot be decoded (no CAP_DAC_READ_SEARCH, or the origin is
	// gone): the lower object under the same name, when it is of the same
	// type, is the origin in every case but a rename after copy-up.
	for i := range d.parts {
		p := &d.parts[i]
		if fs.isUpper(p.li) {
			continue
		}
		st, err := layer.Lstat(p.fd, e.name)
		if err != nil {
			continue
		}
		if layer.IsWhiteout(&st) || st.Mode&unix.S_IFMT != e.top().st.Mode&unix.S_IFMT {
			break
		}
		return identity{st.Dev, st.Ino}, true
	}
	return identity{}, false
}

// fileInfo is the union's os.FileInfo; Sys() returns a *syscall.Stat_t
// carrying the union inode number (go-nfs reads fileids from it).
type fileInfo struct {
	name    string
	st      syscall.Stat_t
	listing uint64 // the listing snapshot this came from, if any
	// id caches the entry's identity once EntryIdentity computed it: a
	// snapshot is immutable and an identity survives copy-up, so clients
	// paging through a listing again need no lookup per entry.
	id atomic.Pointer[Identity]
}

// The kernel fills unix.Stat_t and syscall.Stat_t from the same struct on
// every Linux architecture; this fails to compile if their sizes differ.
var _ [unsafe.Sizeof(unix.Stat_t{}) - unsafe.Sizeof(syscall.Stat_t{})]struct{}
var _ [unsafe.Sizeof(syscall.Stat_t{}) - unsafe.Sizeof(unix.Stat_t{})]struct{}

func (fs *FS) newFileInfo(d *dir, e *entry) *fileInfo {
	st := e.top().st
	st.Ino = fs.ino.number(fs.identityOf(d, e))
	if e.merged() {
		st.Nlink = 1
	}
	name := e.name
	if d == nil {
		name = "/"
	}
	return &fileInfo{name: name, st: *(*syscall.Stat_t)(unsafe.Pointer(&st))}
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.st.Size }
func (fi *fileInfo) Mode() os.FileMode  { return FileMode(uint32(fi.st.Mode)) }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi *fileInfo) IsDir() bool        { return fi.st.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (fi *fileInfo) Sys() any           { st := fi.st; return &st }

// FileMode converts a Linux st_mode (type bits optional) to an os.FileMode,
// setuid, setgid and sticky included.
func FileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFDIR:
		mode |= os.ModeDir
	case syscall.S_IFLNK:
		mode |= os.ModeSymlink
	case syscall.S_IFIFO:
		mode |= os.ModeNamedPipe
	case syscall.S_IFSOCK:
		mode |= os.ModeSocket
	case syscall.S_IFCHR:
		mode |= os.ModeDevice | os.ModeCharDevice
	case syscall.S_IFBLK:
		mode |= os.ModeDevice
	}
	if m&syscall.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// unixPerm converts the permission and special bits of an os.FileMode.
func unixPerm(m os.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		p |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		p |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		p |= syscall.S_ISVTX
	}
	return p
}
