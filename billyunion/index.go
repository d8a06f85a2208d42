package billyunion

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// The index (the kernel's index=on) keeps the names of a lower file with
// several links together once one of them is copied up. On disk, as the
// kernel writes it:
//
//   - WORK/index/<hex of the lower object's origin record> is a hard link
//     of the upper copy. A copy-up of any name of a lower object whose link
//     count is above one builds the copy, links it there first and then
//     places it at the name; every later copy-up of another name of that
//     object only links the index entry to the name (nothing is copied).
//     A lower name not copied up yet shows the index entry's data and
//     attributes, so all names read and stat as one file.
//   - The copy carries the origin xattr (whatever the link count) and the
//     nlink xattr: the union's link count relative to the upper inode's
//     ("U+N" or "U-N"; the kernel also reads "L±N", relative to the lower
//     inode's). Links, unlinks and renames change the union's count and the
//     upper inode's together and leave it as it is; a copy-up, which adds
//     an upper link and no union one, rewrites it.
//   - Removing or covering a lower name of such an object copies it up
//     first (the kernel's ovl_nlink_start), so that the index holds the
//     count. When the union's count reaches zero, the index entry is
//     removed (without nfs_export the kernel removes it rather than
//     leaving an index whiteout).
//   - The upper root's origin xattr records the first lower layer's root,
//     and the index directory's upper xattr the upper root: a start with
//     layers that do not match them is refused, as the kernel refuses the
//     mount. Each entry is then checked as the kernel's mount checks it
//     (cleanIndex).
//
// Directories are not indexed (the kernel does so only with nfs_export).

// indexRef is the index entry an entry's lower object has: its name in the
// index directory and its stat, which is what the union shows for the name.
type indexRef struct {
	name string
	st   unix.Stat_t
}

// indexMode reads Options.Index: "on" (and "") or "off".
func indexMode(v string) (bool, error) {
	switch v {
	case "", "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("billyunion: index=%s: must be on or off: %w", v, syscall.EINVAL)
}

// openIndex checks the upper root's origin and the index directory's upper
// record against the layers (setting them on first use, as the kernel
// does), opens WORK/index and removes temporary leftovers from it. A layer
// filesystem that cannot encode file handles turns the index off, with a
// warning, as the kernel falls back to index=off.
func (fs *FS) openIndex(work string) error {
	upperRoot, lowerRoot := fs.layers[0].Root, fs.layers[1].Root
	var zero [16]byte
	lowerUUID, upperUUID := zero, zero
	if fs.originUUIDs {
		lowerUUID, upperUUID = fs.layerUUID[1], fs.layerUUID[0]
	}
	origin, err := layer.EncodeOrigin(lowerRoot, "", lowerUUID)
	if err != nil {
		return fmt.Errorf("encoding the lower root's handle: %w", err)
	}
	upperRec, err := layer.EncodeUpper(upperRoot, "", upperUUID)
	if err != nil {
		return fmt.Errorf("encoding the upper root's handle: %w", err)
	}
	if len(origin) == 0 || len(upperRec) == 0 {
		fs.log.Warn("a layer's filesystem cannot encode file handles: running with index=off")
		return nil
	}
	if err := verifySetRecord(upperRoot, fs.x.Origin(), origin); err != nil {
		return fmt.Errorf("upper root's origin does not match the first lower layer (%w): it was used with other lower layers; start with -o index=off or the layers it was used with", err)
	}
	wl, err := layer.Open(work)
	if err != nil {
		return err
	}
	defer wl.Close()
	if err := unix.Mkdirat(wl.Root, "index", 0o700); err != nil && err != unix.EEXIST {
		return fmt.Errorf("creating %s/index: %w", work, err)
	}
	fd, err := layer.OpenDir(wl.Root, "index")
	if err != nil {
		return fmt.Errorf("opening %s/index: %w", work, err)
	}
	if err := verifySetRecord(fd, fs.x.Upper(), upperRec); err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s/index belongs to another upper layer (its upper record does not match, %w); start with -o index=off or a fresh work directory", work, err)
	}
	if err := fs.cleanIndex(fd); err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s/index: %w", work, err)
	}
	fs.indexFD = fd
	return nil
}

// cleanIndex checks every entry of the index directory fd as the kernel
// does at mount (ovl_indexdir_cleanup, ovl_verify_index): temporaries ("#",
// the kernel's shared whiteout among them) are removed; a name that is no
// origin record refuses the start; index whiteouts and directory entries
// are kept; a non-directory whose origin xattr is not its name, whose lower
// object is gone, or which is an orphan (its only link, and a union count
// of zero) is removed.
func (fs *FS) cleanIndex(fd int) error {
	return fs.scanIndex(fd, func(name, why string) error {
		if strings.HasPrefix(name, "#") {
			if err := layer.RemoveAll(fd, name); err != nil {
				return fmt.Errorf("removing the leftover %s: %w", name, err)
			}
			return nil
		}
		fs.log.Warn("removing a stale index entry", "index", name, "why", why)
		if err := unix.Unlinkat(fd, name, 0); err != nil {
			return fmt.Errorf("removing the stale entry %s: %w", name, err)
		}
		return nil
	})
}

// errNotIndexEntry is scanIndex's refusal of a name that is no origin record.
var errNotIndexEntry = errors.New("no index entry")

// scanIndex finds, in the index directory fd, what cleanIndex removes, and calls stale
// for each: temporaries (named "#..."), and non-directories whose origin xattr is not
// their name, whose lower object is gone, or which are orphans. A name that is no origin
// record is an error (errNotIndexEntry), as for the kernel.
func (fs *FS) scanIndex(fd int, stale func(name, why string) error) error {
	names, err := layer.ReadNames(fd, "")
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, "#") {
			if err := stale(n, "a temporary"); err != nil {
				return err
			}
			continue
		}
		rec, err := hex.DecodeString(n)
		if err == nil {
			_, err = layer.DecodeOrigin(rec)
		}
		if err != nil {
			return fmt.Errorf("entry %s is no index entry (as the kernel, refusing it; start with -o index=off or move it away): %w", n, errNotIndexEntry)
		}
		st, err := layer.Lstat(fd, n)
		if err != nil {
			return err
		}
		if layer.IsWhiteout(&st) || layer.IsDir(&st) {
			continue
		}
		why := ""
		if v, err := layer.Getxattr(fd, n, fs.x.Origin()); err != nil || string(v) != string(rec) {
			why = "its origin is not its name"
		} else if st.Nlink == 1 {
			lowerN, err := fs.originNlinkErr(fd, n)
			switch {
			case err == unix.ESTALE:
				why = "its lower file is gone"
			case err != nil:
				// Undecidable here (no CAP_DAC_READ_SEARCH): kept.
			case fs.indexNlink(fd, n, &st, lowerN) == 0:
				why = "orphan: no name left"
			}
		}
		if why == "" {
			continue
		}
		if err := stale(n, why); err != nil {
			return err
		}
	}
	return nil
}

// indexNlink is the union's count an index entry (name in dir, stat st,
// lower object's count lowerN) records, 0 when it records none: the
// kernel's ovl_get_nlink with fallback 0.
func (fs *FS) indexNlink(dir int, name string, st *unix.Stat_t, lowerN uint64) uint64 {
	if lowerN == 1 {
		return 0
	}
	v, err := layer.Getxattr(dir, name, fs.x.Nlink())
	if err != nil {
		return 0
	}
	n, ok := parseNlink(v, st.Nlink, lowerN)
	if !ok || n <= 0 {
		return 0
	}
	return uint64(n)
}

// parseNlink applies an nlink xattr value v to the upper inode's count
// upper or the lower one's lower; false for a malformed value.
func parseNlink(v []byte, upper, lower uint64) (int64, bool) {
	if len(v) < 3 || (v[0] != 'U' && v[0] != 'L') || (v[1] != '+' && v[1] != '-') {
		return 0, false
	}
	diff, err := strconv.ParseInt(string(v[1:]), 10, 32)
	if err != nil {
		return 0, false
	}
	if v[0] == 'L' {
		return int64(lower) + diff, true
	}
	return int64(upper) + diff, true
}

// verifySetRecord compares the record attr of the directory dir with want,
// setting it when there is none; ESTALE on a mismatch.
func verifySetRecord(dir int, attr string, want []byte) error {
	v, err := layer.Getxattr(dir, "", attr)
	switch {
	case err == unix.ENODATA:
		return layer.Setxattr(dir, "", attr, want)
	case err != nil:
		return err
	case string(v) != string(want):
		return syscall.ESTALE
	}
	return nil
}

// indexed reports whether a copy-up of e goes through the index: a lower
// non-directory with more than one link, with the index on.
func (fs *FS) indexed(e *entry) bool {
	return fs.indexFD >= 0 && e.exists() && !fs.inUpper(e) && !e.isDir() && e.top().st.Nlink > 1
}

// indexName is the name of the index entry of name in dir (a lower layer
// li): the hex of its origin record; "" when it has no handle.
func (fs *FS) indexName(li, dir int, name string) (string, error) {
	var uuid [16]byte
	if fs.originUUIDs {
		uuid = fs.layerUUID[li]
	}
	rec, err := layer.EncodeOrigin(dir, name, uuid)
	if err != nil || len(rec) == 0 {
		return "", layer.Errno(err)
	}
	return hex.EncodeToString(rec), nil
}

// findIndex looks up the index entry of the lower non-directory name in
// base (layer li, stat st). An entry of another type, or an index
// whiteout, answers EIO, as the kernel's lookup does ("bad index").
func (fs *FS) findIndex(li, base int, name string, st *unix.Stat_t) (*indexRef, error) {
	n, err := fs.indexName(li, base, name)
	if err != nil || n == "" {
		return nil, err
	}
	ist, err := layer.Lstat(fs.indexFD, n)
	if err == unix.ENOENT {
		return nil, nil
	}
	if err != nil {
		return nil, layer.Errno(err)
	}
	if ist.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		fs.log.Warn("bad index entry", "index", n, "mode", ist.Mode, "lower mode", st.Mode)
		return nil, syscall.EIO
	}
	return &indexRef{name: n, st: ist}, nil
}

// topStat is the stat the union shows for e: its index entry's when its
// lower object has one, else its top part's.
func (e *entry) topStat() *unix.Stat_t {
	if e.index != nil {
		return &e.index.st
	}
	return &e.top().st
}

// unionNlink is the link count the union shows for the upper non-directory
// name in dir (stat st): the nlink xattr applied to the upper inode's count
// ("U±N") or to the lower one's ("L±N", lower giving it), else st's own.
// As in the kernel, a malformed value or a result below one counts as none.
func (fs *FS) unionNlink(dir int, name string, st *unix.Stat_t, lower func() (uint64, bool)) uint64 {
	if layer.IsDir(st) {
		return st.Nlink
	}
	v, err := layer.Getxattr(dir, name, fs.x.Nlink())
	if err != nil || len(v) == 0 {
		return st.Nlink
	}
	var lowerN uint64
	if v[0] == 'L' {
		n, ok := lower()
		if !ok {
			return st.Nlink
		}
		lowerN = n
	}
	if n, ok := parseNlink(v, st.Nlink, lowerN); ok && n > 0 {
		return uint64(n)
	}
	return st.Nlink
}

// originNlink is the link count of the object the origin record of name in
// dir names, decoded as stemOf decodes it.
func (fs *FS) originNlink(dir int, name string) (uint64, bool) {
	n, err := fs.originNlinkErr(dir, name)
	return n, err == nil
}

// originNlinkErr is originNlink saying why it failed: ESTALE when no lower
// filesystem holds the object any more.
func (fs *FS) originNlinkErr(dir int, name string) (uint64, error) {
	rec, err := layer.Getxattr(dir, name, fs.x.Origin())
	if err != nil {
		return 0, err
	}
	o, err := layer.DecodeOrigin(rec)
	if err != nil {
		return 0, err
	}
	err = unix.ESTALE
	for _, fd := range fs.ino.decodeFDs {
		st, serr := layer.StatOrigin(fd, o)
		if serr == nil {
			return st.Nlink, nil
		}
		if serr != unix.ESTALE && serr != unix.ENOENT {
			err = serr
		}
	}
	return 0, err
}

// nlinkShown is the link count e, a child of d, shows.
func (fs *FS) nlinkShown(d *dir, e *entry) uint64 {
	st := e.topStat()
	if d == nil || layer.IsDir(st) {
		return st.Nlink
	}
	switch {
	case e.index != nil:
		// The index entry alone may be left (nlink 1) while lower names
		// remain: its nlink xattr counts them.
		lowerN := e.top().st.Nlink
		return fs.unionNlink(fs.indexFD, e.index.name, st, func() (uint64, bool) { return lowerN, true })
	case fs.inUpper(e) && st.Nlink > 1: // an indexed upper inode has its index link too
		dir := fs.upperFD(d)
		return fs.unionNlink(dir, e.name, st, func() (uint64, bool) { return fs.originNlink(dir, e.name) })
	}
	return st.Nlink
}

// setNlink records the union's link count n of the upper inode name in dir
// (stat st) relative to that inode's own count.
func (fs *FS) setNlink(dir int, name string, st *unix.Stat_t, n uint64) error {
	v := "U" + fmt.Sprintf("%+d", int64(n)-int64(st.Nlink))
	return layer.Setxattr(dir, name, fs.x.Nlink(), []byte(v))
}

// setNlinkLower records the union's link count n of the indexed inode name
// in dir relative to its lower object's count lower ("L±N"), which copy-up
// does not change.
func (fs *FS) setNlinkLower(dir int, name string, lower, n uint64) error {
	v := "L" + fmt.Sprintf("%+d", int64(n)-int64(lower))
	return layer.Setxattr(dir, name, fs.x.Nlink(), []byte(v))
}

// nlinkStart rewrites the union's link count of the indexed upper name in dir
// relative to the upper inode's own count before a link or a removal changes that
// count (the kernel's ovl_nlink_start), when it is recorded relative to the lower
// inode's: a copy-up writes that form first and killed before its last step leaves
// it, and a count in it would not follow the change. The caller holds the index
// entry's lock.
func (fs *FS) nlinkStart(dir int, name string) error {
	v, err := layer.Getxattr(dir, name, fs.x.Nlink())
	if err != nil || len(v) == 0 || v[0] != 'L' {
		return nil // none, or already relative to the upper inode
	}
	st, err := layer.Lstat(dir, name)
	if err != nil {
		return err
	}
	shown := fs.unionNlink(dir, name, &st, func() (uint64, bool) { return fs.originNlink(dir, name) })
	return fs.setNlink(dir, name, &st, shown)
}

// indexOfUpper returns the index entry name of the upper non-directory
// name in dir (stat st) when it is indexed: the hex of its origin record,
// naming a link of this very inode; "" otherwise.
func (fs *FS) indexOfUpper(dir int, name string, st *unix.Stat_t) string {
	if fs.indexFD < 0 || layer.IsDir(st) || st.Nlink < 2 {
		return ""
	}
	rec, err := layer.Getxattr(dir, name, fs.x.Origin())
	if err != nil || len(rec) == 0 {
		return ""
	}
	n := hex.EncodeToString(rec)
	ist, err := layer.Lstat(fs.indexFD, n)
	if err != nil || ist.Ino != st.Ino || ist.Dev != st.Dev {
		return ""
	}
	return n
}

// indexLocks serialise the changes of one indexed object's link counts
// (the kernel's overlay inode lock in ovl_nlink_start): a copy-up reads
// the union's count and rewrites the nlink xattr around its link, so no
// link or removal of another name may come in between. Striped by index
// entry name; leaves, taken under directory locks, one at a time.
type indexLocks [64]sync.Mutex

// lockIndex locks the index entry n's stripe and returns the unlock.
func (fs *FS) lockIndex(n string) func() {
	h := fnv.New32a()
	h.Write([]byte(n))
	m := &fs.indexMu[h.Sum32()%uint32(len(fs.indexMu))]
	m.Lock()
	return m.Unlock
}

// indexCleanup prepares the removal of one upper name (name in dir, stat
// st) of an object. It locks the object's index entry (release unlocks;
// never nil) and returns in after what to run once the name is gone, when
// the index must follow (nil when it need not). The union's count drops by
// one; at zero the index entry goes (the kernel's ovl_cleanup_index),
// unless the inode still has other upper links, where, as the kernel does,
// the count is set to those links.
func (fs *FS) indexCleanup(dir int, name string, st unix.Stat_t) (after, release func()) {
	n := fs.indexOfUpper(dir, name, &st)
	if n == "" {
		return nil, func() {}
	}
	release = fs.lockIndex(n)
	if err := fs.nlinkStart(dir, name); err != nil {
		fs.log.Warn("index: recording the link count", "index", n, "err", err)
	}
	shown := fs.unionNlink(dir, name, &st, func() (uint64, bool) { return fs.originNlink(dir, name) })
	if shown > 1 {
		return nil, release
	}
	return func() {
		ist, err := layer.Lstat(fs.indexFD, n)
		if err != nil || ist.Ino != st.Ino {
			return
		}
		if ist.Nlink > 1 {
			fs.log.Warn("cleanup linked index", "index", n, "nlink", ist.Nlink)
			if err := fs.setNlink(fs.indexFD, n, &ist, ist.Nlink-1); err != nil {
				fs.log.Warn("setting index nlink", "index", n, "err", err)
			}
			return
		}
		if err := unix.Unlinkat(fs.indexFD, n, 0); err != nil && err != unix.ENOENT {
			fs.log.Warn("removing orphan index entry", "index", n, "err", err)
		}
	}, release
}

// sameIndexedObject reports two names of one object by the index: a lower
// name whose index entry is the other's upper inode, or two lower names of
// one lower inode (the kernel gives them one overlay inode, hashed by the
// lower one, so a rename between them does nothing).
func (fs *FS) sameIndexedObject(a, b *entry) bool {
	if fs.indexFD < 0 {
		return false
	}
	ka, oka := fs.indexKey(a)
	kb, okb := fs.indexKey(b)
	return oka && okb && ka == kb
}

// indexKey is the inode the names of e's object share with the index on:
// the upper inode (its own, or its lower object's index entry), or for a
// lower file with several links not copied up yet, the lower inode.
func (fs *FS) indexKey(e *entry) (devIno, bool) {
	if !e.exists() || e.isDir() {
		return devIno{}, false
	}
	st := e.topStat()
	if fs.inUpper(e) || e.index != nil || st.Nlink > 1 {
		return devIno{st.Dev, st.Ino}, true
	}
	return devIno{}, false
}
