package handles

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// Union is what handles needs from the union (billyunion.FS).
type Union interface {
	Identify(path string) (billyunion.Identity, error)
	IdentifyWithParent(path string) (billyunion.Identity, billyunion.ObjectID, bool, error)
	IdentifyIn(dir, name string) (parent, obj billyunion.Identity, err error)
	FindDir(id billyunion.ObjectID) (string, error)
	FindConnected(id billyunion.ObjectID) (string, error)
	FindMoved(id billyunion.ObjectID) (string, error)
	Locations(id billyunion.ObjectID) ([]billyunion.Location, error)
	ReadDir(path string) ([]os.FileInfo, error)
	ListedEntries(dir string) *billyunion.ListedEntries
	LayerSetID() uint32
}

// Options configures Handles.
type Options struct {
	// CacheEntries bounds the ObjectID -> path cache; 0 means
	// DefaultCacheEntries. A miss costs a resolution (a few lookups), never
	// a stale handle.
	CacheEntries int
	// Export is the export id every handle carries, so that a handle of one export is
	// STALE on another; 0 means the union's LayerSetID (one export of those layers).
	Export uint32
	Logger *slog.Logger
}

// sharedPaths is a union whose path cache is shared with other unions over the same
// lowers (billyunion.Shared): the Handles of each use that one, and CacheEntries is
// the Shared's to set. Sharing is sound because every cached path is a hint,
// confirmed by a lookup in the asking union before use: a path another union
// recorded for an ObjectID costs a lookup there, and a miss, never a wrong object.
// It matters because the lower objects, most of what workspaces over shared lowers
// name, have one ObjectID and nearly always one path in all of them.
type sharedPaths interface {
	SharedHandlePaths() *lru.Cache[string, string]
}

// DefaultCacheEntries is the path cache size when none is configured.
const DefaultCacheEntries = 1 << 18

// Handles makes and resolves file handles for one union.
type Handles struct {
	union  Union
	export uint32
	// paths maps an ObjectID (its Key) to the path it was last
	// confirmed at. Entries are hints like any other: every use is
	// confirmed with the union.
	paths *lru.Cache[string, string]
	log   *slog.Logger
	gone  []byte // see Gone
	// resolutions counts the handles resolved, by path taken (ResolutionStats).
	resolutions [resolutionPaths]atomic.Uint64
}

// New returns Handles for union.
func New(union Union, opts Options) (*Handles, error) {
	size := opts.CacheEntries
	if size == 0 {
		size = DefaultCacheEntries
	}
	if size < 0 {
		return nil, errors.New("handles: cache size must be positive")
	}
	var paths *lru.Cache[string, string]
	if s, ok := union.(sharedPaths); ok {
		paths = s.SharedHandlePaths()
	}
	if paths == nil {
		var err error
		if paths, err = lru.New[string, string](size); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	export := opts.Export
	if export == 0 {
		export = union.LayerSetID()
	}
	h := &Handles{union: union, export: export, paths: paths, log: log}
	var err error
	if h.gone, err = encode(&handle{export: h.export, obj: billyunion.ObjectID{FS: goneFS, Handle: []byte{0}}}); err != nil {
		return nil, err
	}
	return h, nil
}

// Export is the export id of these handles.
func (h *Handles) Export() uint32 { return h.export }

// ExportOf is the export id a handle names, read from its header alone (Resolve checks
// the rest); ErrBadHandle for bytes too short or of another format.
func ExportOf(fh []byte) (uint32, error) {
	if len(fh) < headerSize || len(fh) > MaxSize || fh[0] != formatVersion {
		return 0, ErrBadHandle
	}
	return binary.BigEndian.Uint32(fh[1:5]), nil
}

// ToHandle returns the handle of the object at path (components from the
// export root; none for the root).
func (h *Handles) ToHandle(path []string) ([]byte, error) {
	fh, _, err := h.Lookup(path)
	return fh, err
}

// Lookup is ToHandle that also returns the object's attributes, read by the same union
// lookup: what an NFS LOOKUP or CREATE answers with.
func (h *Handles) Lookup(path []string) ([]byte, os.FileInfo, error) {
	p := strings.Join(path, "/")
	obj, parent, hasParent, err := h.union.IdentifyWithParent(p)
	if err != nil {
		return nil, nil, err
	}
	hd := &handle{export: h.export, dir: obj.Dir, obj: obj.ID}
	if !obj.Dir && hasParent && len(path) > 0 {
		hd.hasHint, hd.parent, hd.name = true, parent, path[len(path)-1]
	}
	b, err := encode(hd)
	if err != nil {
		return nil, nil, err
	}
	h.paths.Add(obj.ID.Key(), p)
	return b, obj.Info, nil
}

// Found is what LookupIn found: the directory a handle names, and the object at a name
// in it.
type Found struct {
	// DirPath and DirInfo are the directory's path (joined as ResolvePath gives it) and
	// attributes. DirErr is ResolvePath's error for the directory's handle: when it is
	// set, nothing else is.
	DirPath string
	DirInfo os.FileInfo
	DirErr  error
	// Handle and Info are the object's handle and attributes; Err is Lookup's error for
	// the name (ENOENT when the directory holds nothing there).
	Handle []byte
	Info   os.FileInfo
	Err    error
}

// LookupIn resolves the directory handle dirFH and looks name up in it: ResolvePath of
// dirFH, then Lookup of the name, paying one union lookup where the directory's path
// is cached. The name's lookup resolves the directory on its way, and the identity of
// the directory it went through confirms the handle's path as ResolvePath's own
// lookup would: the same object, so never another directory that took the path.
// Anything else (no cached path, another object there, a name that is not a plain
// entry's) takes ResolvePath and Lookup. name must be an entry's name (not "." or "..").
func (h *Handles) LookupIn(dirFH []byte, name string) Found {
	if f, ok := h.lookupInCached(dirFH, name); ok {
		return f
	}
	var f Found
	var info os.FileInfo
	var elems []string
	elems, f.DirPath, info, f.DirErr = h.ResolvePath(dirFH)
	if f.DirErr != nil {
		return Found{DirErr: f.DirErr}
	}
	f.DirInfo = info
	if !info.IsDir() {
		f.Err = syscall.ENOTDIR
		return f
	}
	child := append(append(make([]string, 0, len(elems)+1), elems...), name)
	f.Handle, f.Info, f.Err = h.Lookup(child)
	return f
}

// lookupInCached is LookupIn through the directory's cached path; ok false when that
// cannot answer.
func (h *Handles) lookupInCached(dirFH []byte, name string) (Found, bool) {
	hd, err := decode(dirFH)
	if err != nil || hd.export != h.export || !hd.dir {
		return Found{}, false
	}
	var room billyunion.KeyRoom
	dirPath, ok := h.paths.Get(hd.obj.KeyIn(&room))
	if !ok {
		return Found{}, false
	}
	parent, obj, err := h.union.IdentifyIn(dirPath, name)
	if !parent.Dir || !parent.ID.Equal(hd.obj) {
		return Found{}, false
	}
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return Found{}, false
	}
	h.resolutions[viaCache].Add(1)
	f := Found{DirPath: dirPath, DirInfo: parent.Info}
	if err != nil {
		f.Err = err
		return f, true
	}
	hd = &handle{export: h.export, dir: obj.Dir, obj: obj.ID}
	if !obj.Dir {
		hd.hasHint, hd.parent, hd.name = true, parent.ID, name
	}
	if f.Handle, err = encode(hd); err != nil {
		f.Err = err
		return f, true
	}
	// A hot name's path is cached already: Get keeps it recent without the key and
	// path Add would allocate.
	if known, ok := h.paths.Get(obj.ID.KeyIn(&room)); !ok || !isChildPath(known, dirPath, name) {
		h.paths.Add(obj.ID.Key(), join(dirPath, name))
	}
	f.Info = obj.Info
	return f, true
}

// goneFS is a filesystem index no layer has: ObjectIDs on it resolve to nothing.
const goneFS = 0xff

// Listing makes the handles of the entries of one listing of the directory
// at dir: what ToHandle would give for each, without a lookup per entry
// once the listing was handed out before (the union caches each entry's
// Identity in the listing).
type Listing struct {
	h       *Handles
	dir     []string
	dirKey  string // the directory's path, as the union names it
	parent  billyunion.ObjectID
	entries *billyunion.ListedEntries // the identification of the entries, made on first need
}

// ForListing prepares the handles of the entries of a listing of dir.
func (h *Handles) ForListing(dir []string) (*Listing, error) {
	p := strings.Join(dir, "/")
	id, err := h.union.Identify(p)
	if err != nil {
		return nil, err
	}
	if !id.Dir {
		return nil, syscall.ENOTDIR
	}
	return &Listing{h: h, dir: dir, dirKey: p, parent: id.ID}, nil
}

// Handle returns the handle of entry fi of the listing; ENOENT when its name
// holds another object now. The handles of one page of a listing come from one
// Listing, so that the union reads its events and resolves the directory once for the
// page (billyunion.ListedEntries); not for concurrent use.
func (l *Listing) Handle(fi os.FileInfo) ([]byte, error) {
	if l.entries == nil {
		l.entries = l.h.union.ListedEntries(l.dirKey)
	}
	obj, err := l.entries.Identity(fi)
	if err != nil {
		return nil, err
	}
	hd := &handle{export: l.h.export, dir: obj.Dir, obj: obj.ID}
	if !obj.Dir {
		hd.hasHint, hd.parent, hd.name = true, l.parent, fi.Name()
	}
	b, err := encode(hd)
	if err != nil {
		return nil, err
	}
	l.h.paths.Add(obj.ID.Key(), join(l.dirKey, fi.Name()))
	return b, nil
}

// Close lets go of what the listing's handles held (the directory).
func (l *Listing) Close() {
	if l.entries != nil {
		l.entries.Close()
	}
}

// Gone returns a well-formed handle that names no object and always answers ESTALE. It
// stands in for an object that vanished between being listed and being given a handle
// (a READDIRPLUS served from a listing snapshot): the client then learns it is gone
// when it uses the entry, as if it had been removed a moment later.
func (h *Handles) Gone() []byte { return append([]byte(nil), h.gone...) }

// FromHandle returns the current path of the object fh names.
// ErrBadHandle for bytes that are no handle, ESTALE for a handle of another
// configuration or of an object that is gone.
func (h *Handles) FromHandle(fh []byte) ([]string, error) {
	p, _, err := h.Resolve(fh)
	return p, err
}

// Resolve is FromHandle that also returns the object's attributes, read by the lookup
// that confirmed the path names the object: an NFS call that needs both pays one lookup.
func (h *Handles) Resolve(fh []byte) ([]string, os.FileInfo, error) {
	elems, _, info, err := h.ResolvePath(fh)
	return elems, info, err
}

// ResolvePath is Resolve that also returns the path as the union names it (the
// components joined by "/", "" for the root), which the caller need not join again.
func (h *Handles) ResolvePath(fh []byte) ([]string, string, os.FileInfo, error) {
	hd, err := decode(fh)
	if err != nil {
		return nil, "", nil, err
	}
	if hd.export != h.export {
		return nil, "", nil, syscall.ESTALE
	}
	p, info, err := h.resolve(hd)
	if err != nil {
		return nil, "", nil, err
	}
	if p == "" {
		return []string{}, "", info, nil
	}
	return strings.Split(p, "/"), p, info, nil
}

// Forget drops what is cached for fh's object (go-nfs calls it after a
// rename or remove); the handle itself stays valid while the object lives.
func (h *Handles) Forget(fh []byte) {
	if hd, err := decode(fh); err == nil {
		h.paths.Remove(hd.obj.Key())
	}
}

// CachedPaths is the number of ObjectIDs with a cached path.
func (h *Handles) CachedPaths() int { return h.paths.Len() }

// confirm reports whether the object at p is id (and a directory iff dir), with the
// object's attributes when it is.
func (h *Handles) confirm(p string, id billyunion.ObjectID, dir bool) (os.FileInfo, bool) {
	got, err := h.union.Identify(p)
	if err != nil || got.Dir != dir || !got.ID.Equal(id) {
		return nil, false
	}
	return got.Info, true
}

// resolveAttempts bounds the tries for one handle. Each try confirms candidates one after
// another, so an object renamed back and forth while they run can be missed by all of
// them; a new try starts from fresher records.
const resolveAttempts = 3

func (h *Handles) resolve(hd *handle) (string, os.FileInfo, error) {
	var err error
	for attempt := 0; attempt < resolveAttempts; attempt++ {
		var p string
		var info os.FileInfo
		if p, info, err = h.resolveOnce(hd); err == nil {
			return p, info, nil
		}
	}
	h.resolutions[viaNone].Add(1)
	return "", nil, err
}

func (h *Handles) resolveOnce(hd *handle) (string, os.FileInfo, error) {
	var room billyunion.KeyRoom
	cached := hd.obj.KeyIn(&room)
	if p, ok := h.paths.Get(cached); ok {
		if info, ok := h.confirm(p, hd.obj, hd.dir); ok {
			h.resolutions[viaCache].Add(1)
			return p, info, nil
		}
		h.paths.Remove(cached)
	}
	key := hd.obj.Key() // the hot path above allocates no key
	if hd.dir {
		p, info, err := h.resolveDir(hd.obj)
		if err == nil {
			h.resolutions[viaDirectory].Add(1)
		}
		return p, info, err
	}
	// found confirms the candidate p and caches it.
	found := func(p string) (os.FileInfo, bool) {
		info, ok := h.confirm(p, hd.obj, false)
		if ok {
			h.paths.Add(key, p)
		}
		return info, ok
	}
	if hd.hasHint {
		if dir, _, err := h.resolveDir(hd.parent); err == nil {
			if hd.hashed {
				if p, info, ok := h.scanForHash(dir, hd); ok {
					h.paths.Add(key, p)
					return p, info, nil
				}
			} else {
				p := join(dir, hd.name)
				if info, ok := found(p); ok {
					h.resolutions[viaHint].Add(1)
					return p, info, nil
				}
			}
		}
	}
	locs, err := h.union.Locations(hd.obj)
	if err != nil {
		h.log.Warn("reading the moves index", "err", err)
	}
	for _, loc := range locs {
		if dir, _, err := h.resolveDir(loc.Parent); err == nil {
			p := join(dir, loc.Name)
			if info, ok := found(p); ok {
				h.resolutions[viaMoves].Add(1)
				return p, info, nil
			}
		}
	}
	if p, err := h.union.FindConnected(hd.obj); err == nil {
		if info, ok := found(p); ok {
			h.resolutions[viaConnected].Add(1)
			return p, info, nil
		}
	}
	if p, err := h.union.FindMoved(hd.obj); err == nil {
		if info, ok := found(p); ok {
			h.resolutions[viaMoves].Add(1)
			return p, info, nil
		}
	}
	return "", nil, syscall.ESTALE
}

// The paths a resolution can take, for ResolutionStats.
const (
	viaCache     = iota // the path cache, confirmed
	viaDirectory        // a directory reconnected by its kernel handle (or its redirect record)
	viaHint             // the parent and name the handle carries
	viaMoves            // the moves index
	viaConnected        // the kernel's reconnection of the object's handle
	viaNone             // none: STALE
	resolutionPaths
)

var resolutionNames = [resolutionPaths]string{"cache", "directory", "hint", "moves", "connected", "stale"}

// ResolutionStats counts the handles resolved (FromHandle, Resolve) by the path that
// found them, and those found by none (STALE).
func (h *Handles) ResolutionStats() map[string]uint64 {
	out := make(map[string]uint64, resolutionPaths)
	for i, n := range resolutionNames {
		out[n] = h.resolutions[i].Load()
	}
	return out
}

// resolveDir finds a directory by ObjectID: cache, then the kernel's
// reconnection of its handle, then the records of directories renamed
// with a redirect.
func (h *Handles) resolveDir(id billyunion.ObjectID) (string, os.FileInfo, error) {
	key := id.Key()
	if p, ok := h.paths.Get(key); ok {
		if info, ok := h.confirm(p, id, true); ok {
			return p, info, nil
		}
		h.paths.Remove(key)
	}
	for _, find := range []func(billyunion.ObjectID) (string, error){h.union.FindDir, h.union.FindMoved} {
		p, err := find(id)
		if err != nil {
			continue
		}
		if info, ok := h.confirm(p, id, true); ok {
			h.paths.Add(key, p)
			return p, info, nil
		}
	}
	return "", nil, syscall.ESTALE
}

// scanForHash finds a name too long for the handle among dir's entries by
// its hash (one listing, served from the union's listing cache when warm).
func (h *Handles) scanForHash(dir string, hd *handle) (string, os.FileInfo, bool) {
	entries, err := h.union.ReadDir(dir)
	if err != nil {
		return "", nil, false
	}
	for _, fi := range entries {
		if nameHash(fi.Name()) != hd.nameHash {
			continue
		}
		p := join(dir, fi.Name())
		if info, ok := h.confirm(p, hd.obj, false); ok {
			return p, info, true
		}
	}
	return "", nil, false
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// isChildPath reports whether p is join(dir, name), without joining.
func isChildPath(p, dir, name string) bool {
	if dir == "" {
		return p == name
	}
	return len(p) == len(dir)+1+len(name) && strings.HasPrefix(p, dir) && p[len(dir)] == '/' && strings.HasSuffix(p, name)
}
