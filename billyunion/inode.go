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
// stem (stem.go): the object it was copied up from, so copy-up does not
// change its number, else for a merged directory its topmost lower part,
// else itself. A stem is a (device, inode) pair; each distinct layer
// filesystem gets a small index carried in the top bits, so numbers from
// different filesystems never collide. With every layer on one filesystem
// the index takes no bits and numbers are the real inode numbers, as in the
// kernel.
type inodes struct {
	fsIndex map[uint64]uint64 // device -> filesystem index (upper's is 0)
	fsBits  uint
	// decodeFDs holds one layer root per distinct lower filesystem, for
	// decoding origin handles.
	decodeFDs []int
	// origins caches the objects origin records were decoded to.
	origins *lru.Cache[string, devIno]
}

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
	in.origins, _ = lru.New[string, devIno](1 << 16)
	return in
}

// number maps a stem's device and inode to the union's inode number.
func (in *inodes) number(id devIno) uint64 {
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

// fsID is the index of device dev's filesystem as ObjectID.FS carries it;
// false for a device no layer is on.
func (fs *FS) fsID(dev uint64) (uint8, bool) {
	idx, ok := fs.ino.fsIndex[dev]
	return uint8(idx), ok && idx <= 255
}

// fileInfo is the union's os.FileInfo; Sys() returns a *syscall.Stat_t
// carrying the union inode number (go-nfs reads fileids from it).
type fileInfo struct {
	name string
	st   syscall.Stat_t // the top part's stat, with the union's inode number
	// layerIno is the top part's own inode number (st.Dev is its device).
	layerIno uint64
	listing  uint64 // the listing snapshot this came from, if any
	// For a listing entry: the parts its lookup found and the directory cache's
	// generation before that lookup (noGeneration when unknown). While the generation
	// holds, the parts are still what the name holds, and EntryIdentity needs no lookup.
	// With ofLowers set, gen is the lower-only union's (an entry of a shared listing of
	// a view, lowercache.go), and only that union's cache vouches for the parts.
	parts    []partRef
	gen      uint64
	ofLowers bool
	// id caches what EntryIdentity found for the entry: a snapshot is
	// immutable and an ObjectID survives copy-up, so clients paging through
	// a listing again need no lookup per entry.
	id atomic.Pointer[Identity]
}

// partRef is what the identity rule reads of a part: its layer, type and object, and
// where a part below a redirect lies (part.name, part.abs).
type partRef struct {
	li   int
	mode uint32
	obj  devIno
	name string
	abs  []string
}

func partRefs(parts []part) []partRef {
	refs := make([]partRef, len(parts))
	for i, p := range parts {
		refs[i] = partRef{li: p.li, mode: p.st.Mode, obj: devIno{p.st.Dev, p.st.Ino}, name: p.name, abs: p.abs}
	}
	return refs
}

// entryOf rebuilds the entry refs describe, without descriptors.
func entryOf(name string, refs []partRef) entry {
	e := entry{name: name, parts: make([]part, len(refs))}
	for i, r := range refs {
		e.parts[i] = part{li: r.li, fd: -1, st: unix.Stat_t{Dev: r.obj.dev, Ino: r.obj.ino, Mode: r.mode}, name: r.name, abs: r.abs}
	}
	return e
}

// The kernel fills unix.Stat_t and syscall.Stat_t from the same struct on
// every Linux architecture; this fails to compile if their sizes differ.
var _ [unsafe.Sizeof(unix.Stat_t{}) - unsafe.Sizeof(syscall.Stat_t{})]struct{}
var _ [unsafe.Sizeof(syscall.Stat_t{}) - unsafe.Sizeof(unix.Stat_t{})]struct{}

func (fs *FS) newFileInfo(d *dir, e *entry) *fileInfo {
	s, _ := fs.entryStem(d, e) // on an error, the stem without the origin record
	return fs.fileInfoOf(d, e, s)
}

// fileInfoOf is newFileInfo for an entry whose stem is known.
func (fs *FS) fileInfoOf(d *dir, e *entry, s stem) *fileInfo {
	nlink := uint64(1)
	if !e.merged() {
		nlink = fs.nlinkShown(d, e)
	}
	name := e.name
	if d == nil {
		name = "/"
	}
	return fs.unionInfo(name, *e.topStat(), nlink, s)
}

// unionInfo is the FileInfo of the union object named name that stems from s, whose
// top part has attributes st, with the link count the union shows.
func (fs *FS) unionInfo(name string, st unix.Stat_t, nlink uint64, s stem) *fileInfo {
	layerIno := st.Ino
	st.Ino = fs.ino.number(s.devIno)
	st.Nlink = nlink
	return &fileInfo{name: name, st: *(*syscall.Stat_t)(unsafe.Pointer(&st)), layerIno: layerIno}
}

// LayerObject returns the device and inode number of the layer object a union FileInfo
// describes (the top part: the upper copy once there is one), so that a descriptor opened
// earlier can be checked to be that object still; ok is false for another FileInfo.
func LayerObject(fi os.FileInfo) (dev, ino uint64, ok bool) {
	f, ok := fi.(*fileInfo)
	if !ok {
		return 0, 0, false
	}
	return f.st.Dev, f.layerIno, true
}

// StatOf returns the attributes a union FileInfo describes (Sys's), without the copy
// Sys makes for each caller: the FileInfo's own memory, which a listing snapshot's entries
// share between calls, so only to be read. ok is false for another FileInfo.
func StatOf(fi os.FileInfo) (st *syscall.Stat_t, ok bool) {
	f, ok := fi.(*fileInfo)
	if !ok {
		return nil, false
	}
	return &f.st, true
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
