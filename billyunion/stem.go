package billyunion

import (
	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// The identity rule. Every union object stems from one layer object, and
// both the names a client keeps for it are made from that object alone: its
// inode number (inodes.number, the NFS fileid) from the stem's device and
// inode, its ObjectID (objectID, the NFS file handle) from the stem's kernel
// file handle. So a fileid and a handle change together, which is never:
// copy-up keeps the stem, and so does a rename unless the origin has to be
// guessed (below).
//
// The stem of
//
//   - the root is its top layer's root, as in the kernel;
//   - an upper object (or one of a layer committed from the upper, which
//     keeps the identity it had there) with a usable origin record is the
//     object it was copied up from: decoded from the record with open_by_handle_at, or,
//     where that fails (no CAP_DAC_READ_SEARCH, or the origin is gone), a
//     directory's topmost lower part and a non-directory's lower object of
//     the same name and type, which is the origin in every case but a rename
//     after copy-up;
//   - a merged directory is its topmost lower part;
//   - anything else is the object itself (its top part).
//
// An origin record is usable when it decodes, and the object it leads to
// lies on one of the layers' filesystems. A record that is empty (written
// where the lower object's handle could not be encoded) or malformed names
// no origin.

// devIno is a layer object's device and inode number, what inode numbers
// are made from.
type devIno struct{ dev, ino uint64 }

// stem is the layer object a union object stems from.
type stem struct {
	devIno
	// origin is the origin record when the stem is the object the union
	// object was copied up from: its ObjectID is then the record's handle.
	origin []byte
	// Otherwise the stem is name in dirFD ("" for dirFD itself) on layer li,
	// or at the path abs from that layer's root (a part below an absolute
	// redirect), and its ObjectID is what the kernel names it by.
	li, dirFD int
	name      string
	abs       []string
}

// entryStem is the stem of entry e, a child of d (d is nil for the root,
// whose parts are in e).
func (fs *FS) entryStem(d *dir, e *entry) (stem, error) {
	if d == nil {
		return fs.stemOf(nil, "", e.parts, true)
	}
	return fs.stemOf(d, e.name, e.parts, false)
}

// dirStem is the stem of the resolved directory d, read from its own
// descriptors.
func (fs *FS) dirStem(d *dir) (stem, error) {
	return fs.stemOf(nil, "", d.parts, len(d.path) == 0)
}

// stemOf applies the identity rule to the object made of parts (top-down).
// With parent set the object is name in parent; with parent nil the parts
// hold descriptors of the object itself.
//
// An error reading the origin record comes back together with the stem the
// rule gives without the record: an inode number is still reported (a
// listing shows an entry removed under it rather than failing), an
// ObjectID, which must persist, is not.
func (fs *FS) stemOf(parent *dir, name string, parts []part, root bool) (stem, error) {
	at := func(p *part) stem {
		s := stem{devIno: devIno{p.st.Dev, p.st.Ino}, li: p.li, dirFD: p.fd}
		switch {
		case parent == nil:
		case p.abs != nil:
			s.dirFD, s.abs = -1, p.abs
		case p.name != "":
			s.dirFD, s.name = parent.partFor(p.li).fd, p.name
		default:
			s.dirFD, s.name = parent.partFor(p.li).fd, name
		}
		return s
	}
	top := &parts[0]
	self := at(top)
	if root || !fs.isUpper(top.li) && !fs.isCommitted(top.li) {
		return self, nil
	}
	var err error
	rec, xerr := layer.Getxattr(self.dirFD, self.name, fs.x.Origin())
	switch {
	case xerr == nil:
		if s, ok := fs.originStem(rec, parent, name, parts); ok {
			return s, nil
		}
	case xerr != unix.ENODATA && xerr != unix.EOPNOTSUPP:
		err = layer.Errno(xerr)
	}
	if layer.IsDir(&top.st) && len(parts) > 1 {
		return at(&parts[1]), err
	}
	return self, err
}

// originStem finds the object the origin record rec of an upper object
// names. Records that led somewhere by decoding are cached; the fallbacks
// are not, so that a later decode can still correct them.
func (fs *FS) originStem(rec []byte, parent *dir, name string, parts []part) (stem, bool) {
	if di, ok := fs.ino.origins.Get(string(rec)); ok { // only usable records are cached
		return stem{devIno: di, origin: rec}, true
	}
	o, err := layer.DecodeOrigin(rec)
	if err != nil || len(o.FID) > maxObjectHandle {
		return stem{}, false
	}
	wantType := parts[0].st.Mode & unix.S_IFMT
	for _, fd := range fs.ino.decodeFDs {
		st, err := layer.StatOrigin(fd, o)
		if err != nil || st.Mode&unix.S_IFMT != wantType {
			continue
		}
		if _, ok := fs.fsID(st.Dev); !ok {
			continue
		}
		di := devIno{st.Dev, st.Ino}
		fs.ino.origins.Add(string(rec), di)
		return stem{devIno: di, origin: rec}, true
	}
	di, ok := fs.lowerOrigin(parent, name, parts)
	if !ok {
		return stem{}, false
	}
	if _, ok := fs.fsID(di.dev); !ok {
		return stem{}, false
	}
	return stem{devIno: di, origin: rec}, true
}

// lowerOrigin guesses the origin of an upper object without decoding its
// record: a directory's topmost lower part, else the first lower object of
// the same name in parent, when it is of the same type.
func (fs *FS) lowerOrigin(parent *dir, name string, parts []part) (devIno, bool) {
	top := &parts[0]
	if layer.IsDir(&top.st) {
		if len(parts) > 1 {
			return devIno{parts[1].st.Dev, parts[1].st.Ino}, true
		}
		return devIno{}, false
	}
	if parent == nil {
		return devIno{}, false
	}
	for i := range parent.parts {
		p := &parent.parts[i]
		if fs.isUpper(p.li) {
			continue
		}
		st, err := layer.Lstat(p.fd, name)
		if err != nil {
			continue
		}
		if layer.IsWhiteout(&st) || st.Mode&unix.S_IFMT != top.st.Mode&unix.S_IFMT {
			break
		}
		return devIno{st.Dev, st.Ino}, true
	}
	return devIno{}, false
}
