package billyunion

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// The moves index records where non-directories went when they were
// renamed or linked through the union, so that an ObjectID (whose NFS
// handle carries only where the object was when the handle was made) still
// finds it. Directories need no record: the kernel reconnects a directory
// handle to its current path (FindDir).
//
// It lives in Work/ovlnfs-index, beside the kernel's Work/work: one small
// file per object, named by the hex of its ObjectID's wide form, holding
// the object's recent locations, newest first. A record is written before
// the rename it describes (write to a temporary name, then rename into
// place: never torn; temporaries a killed process left are removed at
// start), and keeps the location the object leaves, so an
// interrupted rename finds the object either way. On a journalling
// filesystem the record's rename is committed no later than the object's.
// Records are hints: readers confirm them with Identify, so a stale one
// costs a lookup.
//
// If the directory is missing at start (a fresh upper, or the work
// directory was lost), it is rebuilt from the upper layer: every
// non-directory there gets a record of where it is.

const (
	movesDir        = "ovlnfs-index"
	movesBuildDir   = "ovlnfs-index.new"
	movesVersion    = 1
	movesMaxRecords = 4
	movesStripes    = 64
	// tempRecordPrefix starts the name a record is written under before it is renamed
	// into place.
	tempRecordPrefix = "#tmp."
)

// Location is where an object was seen: a name in a directory, the
// directory given by its ObjectID so that renames of ancestors don't matter.
type Location struct {
	Parent ObjectID
	Name   string
}

type moves struct {
	fd  int // Work/ovlnfs-index
	seq atomic.Uint64
	// stripes serialise the read-merge-write of one record; a leaf lock,
	// held for a few syscalls on the work directory.
	stripes [movesStripes]sync.Mutex
}

func openMoves(workFD int, fs *FS) (*moves, error) {
	fd, err := layer.OpenDir(workFD, movesDir)
	if err == unix.ENOENT {
		if err := fs.rebuildMoves(workFD); err != nil {
			return nil, fmt.Errorf("rebuilding the moves index: %w", err)
		}
		fd, err = layer.OpenDir(workFD, movesDir)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the moves index: %w", layer.Errno(err))
	}
	if err := removeTempRecords(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cleaning the moves index: %w", err)
	}
	return &moves{fd: fd}, nil
}

// removeTempRecords removes the temporary records a killed process left between
// writing one and renaming it into place (names starting with '#', never a record's:
// those are hex). Each is a record that never took effect; left alone they would pile up.
func removeTempRecords(fd int) error {
	names, err := layer.ReadNames(fd, "")
	if err != nil {
		return layer.Errno(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, tempRecordPrefix) {
			if err := unix.Unlinkat(fd, n, 0); err != nil && err != unix.ENOENT {
				return layer.Errno(err)
			}
		}
	}
	return nil
}

func (m *moves) close() {
	if m != nil {
		unix.Close(m.fd)
	}
}

func recordName(id ObjectID) string { return hex.EncodeToString(id.AppendBinary(nil)) }

func (m *moves) stripe(id ObjectID) *sync.Mutex {
	h := fnv.New32a()
	h.Write(id.Handle)
	return &m.stripes[h.Sum32()%movesStripes]
}

// read returns the locations recorded for id, newest first.
func (m *moves) read(id ObjectID) ([]Location, error) {
	return readRecord(m.fd, recordName(id))
}

func readRecord(dirFD int, name string) ([]Location, error) {
	f, err := layer.OpenFile(dirFD, name, unix.O_RDONLY, 0)
	if err == unix.ENOENT {
		return nil, nil
	}
	if err != nil {
		return nil, layer.Errno(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, layer.Errno(err)
	}
	return decodeRecord(b)
}

func decodeRecord(b []byte) ([]Location, error) {
	if len(b) < 2 || b[0] != movesVersion {
		return nil, syscall.EINVAL
	}
	n := int(b[1])
	b = b[2:]
	locs := make([]Location, 0, n)
	for i := 0; i < n; i++ {
		id, rest, err := wideType.decode(b)
		if err != nil || len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return nil, syscall.EINVAL
		}
		name := string(rest[1 : 1+int(rest[0])])
		if ValidName(name) != nil {
			return nil, syscall.EINVAL
		}
		locs = append(locs, Location{Parent: id, Name: name})
		b = rest[1+int(rest[0]):]
	}
	return locs, nil
}

func encodeRecord(locs []Location) []byte {
	b := []byte{movesVersion, byte(len(locs))}
	for _, l := range locs {
		b = l.Parent.AppendBinary(b)
		b = append(b, byte(len(l.Name)))
		b = append(b, l.Name...)
	}
	return b
}

// add puts locs (newest first) in front of what is recorded for id.
func (m *moves) add(id ObjectID, locs ...Location) error {
	mu := m.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	return m.addLocked(m.fd, id, locs)
}

func (m *moves) addLocked(dirFD int, id ObjectID, locs []Location) error {
	name := recordName(id)
	old, err := readRecord(dirFD, name)
	if err != nil && err != syscall.EINVAL { // a damaged record is replaced
		return err
	}
	merged := make([]Location, 0, movesMaxRecords)
	for _, l := range append(locs, old...) {
		if len(merged) == movesMaxRecords {
			break
		}
		dup := false
		for _, k := range merged {
			if k.Name == l.Name && k.Parent.Equal(l.Parent) {
				dup = true
				break
			}
		}
		if !dup {
			merged = append(merged, l)
		}
	}
	tmp := tempRecordPrefix + strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(m.seq.Add(1), 16)
	f, err := layer.OpenFile(dirFD, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return layer.Errno(err)
	}
	_, err = f.Write(encodeRecord(merged))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dirFD, tmp, dirFD, name)
	}
	if err != nil {
		unix.Unlinkat(dirFD, tmp, 0)
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return layer.Errno(err)
	}
	return nil
}

// forget drops the record of an object that is gone.
func (m *moves) forget(id ObjectID) {
	mu := m.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	unix.Unlinkat(m.fd, recordName(id), 0)
}

// Locations returns where id was recorded to have moved, newest first.
// Candidates only.
func (fs *FS) Locations(id ObjectID) ([]Location, error) {
	if fs.moves == nil {
		return nil, nil
	}
	return fs.moves.read(id)
}

// recordMove notes, before it happens, that the non-directory e in od is
// about to get the name newName in nd (rename or link). keepOld keeps the
// old location as a candidate too (it stays valid for a link, and covers an
// interrupted rename).
func (fs *FS) recordMove(od *dir, e *entry, nd *dir, newName string) error {
	if fs.moves == nil || e.isDir() {
		return nil
	}
	id, err := fs.objectIDOf(od, e)
	if err != nil {
		return err
	}
	oldParent, newParent, err := fs.moveParents(od, nd)
	if err != nil {
		return err
	}
	return fs.moves.add(id, Location{newParent, newName}, Location{oldParent, e.name})
}

// removedID returns the ObjectID of a non-directory whose last name is
// about to go, so its record can be dropped; best effort (a stale record
// is harmless).
func (fs *FS) removedID(d *dir, e *entry) (ObjectID, bool) {
	if fs.moves == nil || e.isDir() || !fs.inUpper(e) || e.top().st.Nlink > 1 {
		return ObjectID{}, false
	}
	id, err := fs.objectIDOf(d, e)
	return id, err == nil
}

// rebuildMoves writes a fresh index for what the upper layer holds, in a
// separate directory renamed into place when complete, so that a crash
// leaves either no index (rebuilt again) or a whole one.
func (fs *FS) rebuildMoves(workFD int) error {
	if err := layer.RemoveAll(workFD, movesBuildDir); err != nil && err != unix.ENOENT {
		return layer.Errno(err)
	}
	if err := unix.Mkdirat(workFD, movesBuildDir, 0o700); err != nil {
		return layer.Errno(err)
	}
	// A descriptor fsync accepts (not O_PATH).
	fd, err := unix.Openat(workFD, movesBuildDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return layer.Errno(err)
	}
	defer unix.Close(fd)
	m := &moves{fd: fd}
	count := 0
	var walk func(comps []string) error
	walk = func(comps []string) error {
		d, err := fs.resolveDir(comps, false)
		if err != nil {
			return nil // hidden or gone: nothing visible to record
		}
		defer d.close()
		if !fs.dirHasUpper(d) {
			return nil
		}
		names, err := layer.ReadNames(fs.upperFD(d), "")
		if err != nil {
			return layer.Errno(err)
		}
		parent, err := fs.dirObjectID(d)
		if err != nil {
			return err
		}
		var subdirs []string
		for _, name := range names {
			if ValidName(name) != nil {
				continue
			}
			e, err := fs.lookupChild(d, name)
			if err != nil || !fs.inUpper(&e) {
				continue
			}
			if e.isDir() {
				subdirs = append(subdirs, name)
				if err := fs.rebuildDirRecord(m, fd, d, &e, parent); err != nil {
					return err
				}
				continue
			}
			id, err := fs.objectIDOf(d, &e)
			if err != nil {
				continue
			}
			if err := m.addLocked(fd, id, []Location{{parent, name}}); err != nil {
				return err
			}
			count++
		}
		for _, name := range subdirs {
			if err := walk(append(append([]string(nil), comps...), name)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(nil); err != nil {
		return err
	}
	if err := unix.Fsync(fd); err != nil {
		return layer.Errno(err)
	}
	if err := unix.Renameat(workFD, movesBuildDir, workFD, movesDir); err != nil {
		return layer.Errno(err)
	}
	fs.log.Info("built the moves index from the upper layer", "objects", count)
	return unix.Fsync(workFD)
}

// Directories renamed with a redirect (redirect.go) keep their lower parts
// where they were, so the kernel still connects a handle of anything in or
// below them to its old place in its layer, which is no longer its union
// path. Such a rename is recorded like a non-directory's, under the
// directory's ObjectID and under the kernel handle of each of its lower
// parts, so that FindMoved can start from any object's place in any layer:
// the deepest directory on that layer path with a record gives where that
// part of the path went.

// maxMovedDepth bounds how deep FindMoved follows records whose parent
// needs a FindMoved of its own, maxMovedSteps how many layer paths one
// FindMoved examines in all: records are hints, and forged or looping ones
// must cost a bounded number of lookups.
const (
	maxMovedDepth = 16
	maxMovedSteps = 64
)

// dirMoveKeys are the record names of the directory e (a child of d): its
// ObjectID and the handles of its lower parts.
func (fs *FS) dirMoveKeys(d *dir, e *entry) ([]ObjectID, error) {
	id, err := fs.objectIDOf(d, e)
	if err != nil {
		return nil, err
	}
	keys := []ObjectID{id}
	for i := range e.parts {
		p := &e.parts[i]
		if fs.isUpper(p.li) {
			continue
		}
		var pid ObjectID
		switch {
		case p.abs != nil:
			pid, err = fs.handleAtPath(p.li, p.abs)
		case p.name != "":
			pid, err = fs.handleAt(p.li, d.partFor(p.li).fd, p.name)
		default:
			pid, err = fs.handleAt(p.li, d.partFor(p.li).fd, e.name)
		}
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(keys, pid.Equal) {
			keys = append(keys, pid)
		}
	}
	return keys, nil
}

// moveParents are the ObjectIDs of a move's old and new parent directories.
func (fs *FS) moveParents(od, nd *dir) (oldParent, newParent ObjectID, err error) {
	if oldParent, err = fs.dirObjectID(od); err != nil || nd == od {
		return oldParent, oldParent, err
	}
	newParent, err = fs.dirObjectID(nd)
	return oldParent, newParent, err
}

// recordDirMove notes, before it happens, that the directory e in od, which
// has lower parts, is about to get the name newName in nd.
func (fs *FS) recordDirMove(od *dir, e *entry, nd *dir, newName string) error {
	if fs.moves == nil {
		return nil
	}
	keys, err := fs.dirMoveKeys(od, e)
	if err != nil {
		return err
	}
	oldParent, newParent, err := fs.moveParents(od, nd)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := fs.moves.add(k, Location{newParent, newName}, Location{oldParent, e.name}); err != nil {
			return err
		}
	}
	return nil
}

// FindMoved returns where the object id is when it, or a directory on its
// way from the root, was renamed with a redirect: FindDir and
// FindConnected give its old place then. It is confirmed with Identify;
// ESTALE when no record leads to it.
func (fs *FS) FindMoved(id ObjectID) (string, error) {
	budget := maxMovedSteps
	return fs.findMoved(id, 0, &budget)
}

func (fs *FS) findMoved(id ObjectID, depth int, budget *int) (string, error) {
	if fs.moves == nil || depth > maxMovedDepth || *budget <= 0 {
		return "", syscall.ESTALE
	}
	*budget--
	rel, isDir, in, err := fs.pathByHandle(id)
	if err != nil {
		return "", err
	}
	comps, err := splitPath(rel)
	if err != nil || len(comps) == 0 {
		return "", syscall.ESTALE
	}
	// The records of the directories on the layer path (the object itself
	// too when it is one), top-down.
	dirs := len(comps)
	if !isDir {
		dirs--
	}
	type recorded struct {
		depth int
		locs  []Location
	}
	var found []recorded
	fd := in.fd
	for k := 0; k < dirs; k++ {
		pid, err := fs.handleIn(id.FS, fd, comps[k])
		if err != nil {
			break
		}
		if locs, err := fs.moves.read(pid); err == nil && len(locs) > 0 {
			found = append(found, recorded{k + 1, locs})
		}
		if k+1 == dirs {
			break
		}
		next, err := layer.OpenDir(fd, comps[k])
		if fd != in.fd {
			unix.Close(fd)
		}
		if err != nil {
			fd = in.fd
			break
		}
		fd = next
	}
	if fd != in.fd {
		unix.Close(fd)
	}
	for i := len(found) - 1; i >= 0; i-- {
		for _, loc := range found[i].locs {
			parent, err := fs.dirPathOf(loc.Parent, depth+1, budget)
			if err != nil {
				continue
			}
			cand := strings.Join(append(append(splitNonEmpty(parent), loc.Name), comps[found[i].depth:]...), "/")
			if fs.isAt(cand, id) {
				return cand, nil
			}
		}
	}
	return "", syscall.ESTALE
}

// dirPathOf is the confirmed path of the directory id: where FindDir puts
// it, else where FindMoved does.
func (fs *FS) dirPathOf(id ObjectID, depth int, budget *int) (string, error) {
	if p, err := fs.FindDir(id); err == nil && fs.isAt(p, id) {
		return p, nil
	}
	return fs.findMoved(id, depth, budget)
}

// isAt reports whether the object at p is id.
func (fs *FS) isAt(p string, id ObjectID) bool {
	got, err := fs.Identify(p)
	return err == nil && got.ID.Equal(id)
}

func splitNonEmpty(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// rebuildDirRecord records where a directory with a redirect is, when the
// index is rebuilt (a redirect the kernel or an earlier run made).
func (fs *FS) rebuildDirRecord(m *moves, buildFD int, d *dir, e *entry, parent ObjectID) error {
	if !fs.hasLower(e) {
		return nil
	}
	if _, has, err := fs.upperRedirect(fs.upperFD(d), e.name); err != nil || !has {
		return nil
	}
	keys, err := fs.dirMoveKeys(d, e)
	if err != nil {
		return nil // unreadable: its handles are found the slow way or not at all
	}
	for _, k := range keys {
		if err := m.addLocked(buildFD, k, []Location{{parent, e.name}}); err != nil {
			return err
		}
	}
	return nil
}
