package billyunion

import (
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// The directory cache. Every path the union resolves is walked one component at a time
// in every layer (a stat, an opaque-xattr read and a descriptor open per component and
// layer), and an NFS server resolves the same directories over and over: a compiler
// reading a tree of headers resolves each header's directory for every LOOKUP, ACCESS
// and READ. The cache keeps resolved directories (their parts and descriptors) by path.
//
// It is exact, not merely recent: the layers' filesystems carry a fanotify filesystem
// mark for every change of a directory entry or of attributes (create, delete, move,
// attrib), whoever makes it, ovlnfs or a tool working on a layer behind its back. The
// kernel queues those events inside the system call that makes the change, before it
// returns, so a lookup that first reads the queue (one non-blocking read) sees every
// change completed before it.
//
// Each event names the directory (by file handle) and the entry that changed
// (fanotify.go), and invalidates only what depends on that entry, so a busy
// filesystem's unrelated events cost a map lookup each and invalidate nothing. What a
// cached directory at path P depends on is its dependency set: for P and each of its
// ancestors, every part's location (the parent's part in the same layer and the name
// the part has there) and every part's own attributes (the part's handle and "."). An
// event naming any of them drops P: so a rename, removal, whiteout, shadowing mkdir,
// opaque or redirect change of an ancestor drops every cached directory below it, and
// nothing else. An event naming an entry inside one of P's parts drops nothing but
// marks P's attributes stale (its mtime changed): P still resolves its children, but a
// GETATTR of P looks it up again (getFresh).
//
// The same exactness lets the cache remember what the identity rule (stem.go) made of a
// layer object, keyed by the object's device and inode: its stem and its ObjectID. A
// lookup of a hot name then reads no origin xattr and asks the kernel for no file
// handle. Such an identity is kept with the cached directory it was found in, and is
// dropped with it, and by any event naming the entry (in any of that directory's parts,
// under the object's name or a redirect's) or the object itself: a directory's own
// changes name it with ".", and an upper non-directory, whose origin xattr can change
// through any of its hard links, is watched by its own handle where the group reports
// objects' handles as well (FAN_REPORT_FID, asked for together with DFID_NAME).
// An inode number is only reused after its object was removed, which is such an event.
//
// A walk stores what it resolved only if no event touching its dependency set arrived
// between its start and its store, so a walk that raced a change never leaves a state
// that no longer exists. For that the cache keeps the most recent events (eventLog);
// a walk older than them stores nothing.
//
// A union over a Shared's lowers keeps here only the directories that have an upper
// part or lie below one that is not lower-pure; the rest come from the Shared's lower
// directory cache (lowercache.go). For those, a cached directory remembers which names
// its upper part held nothing at (upperAbsent): an event naming such an entry in the
// upper part forgets it, as it marks the attributes stale.
//
// Where per-event reports are unavailable (FAN_REPORT_DFID_NAME needs Linux 5.9 and a
// filesystem whose handles fanotify can report), the group reports object handles only
// (FAN_REPORT_FID) and any event empties the whole cache, as does a queue overflow in
// either mode. Without CAP_SYS_ADMIN, or on a filesystem fanotify cannot mark, there is
// no cache and every path is walked.
//
// Lock order: dirCache.mu is a leaf, held for the queue read, applying its events and
// the map operations; no descriptor is opened under it (closing evicted ones is, and
// nothing else blocks).

// defaultDirEntries bounds the cached directories; each holds a descriptor per part.
const defaultDirEntries = 1024

// defaultIdentities bounds the remembered identities (about 250 bytes each).
const defaultIdentities = 1 << 16

// eventLog is how many recent events the cache keeps to check a walk's store against.
// The log grows to it as events come (many unions over shared lowers see few).
const eventLog = 4096

// eventBuffer is the size of one read of the event queue; a read takes what fits and the
// next read the rest.
const eventBuffer = 16 << 10

// knownIdentity is what the identity rule made of a layer object.
type knownIdentity struct {
	stem devIno
	id   ObjectID
}

// changeEvents are the fanotify events that can change how a path resolves.
const changeEvents = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO |
	unix.FAN_ATTRIB | unix.FAN_DELETE_SELF | unix.FAN_MOVE_SELF | unix.FAN_ONDIR

// cacheMode is how events invalidate the cache.
type cacheMode uint8

const (
	cacheOff      cacheMode = iota
	cacheWhole              // FAN_REPORT_FID: any event empties the cache
	cachePerEvent           // FAN_REPORT_DFID_NAME: an event drops what depends on the entry it names
)

func (m cacheMode) String() string {
	switch m {
	case cacheWhole:
		return "whole"
	case cachePerEvent:
		return "per-event"
	}
	return "off"
}

// cachedDir is a cached directory with what invalidates it.
type cachedDir struct {
	d    *dir // nil for the root, which is never cached but is a parent
	path string
	// lis and handles: each part's layer and fileKey.
	lis     []int
	handles []string
	deps    []evKey // the dependency set
	// attrsStale: an entry of one of the parts changed since the parts were looked up.
	attrsStale bool
	// upperAbsent: names the directory's upper part held nothing at when looked up
	// (lowercache.go), each dropped by an event naming it there.
	upperAbsent map[string]struct{}
}

// maxUpperAbsent bounds the names a cached directory remembers its upper lacks.
const maxUpperAbsent = 4096

// identityRec is a remembered identity and what invalidates it.
type identityRec struct {
	k      knownIdentity
	parent string   // the cached directory it goes with (a path key)
	paths  []string // entry paths (parent/name) an event names it by
	self   string   // a directory object's fileKey: an event on it names it ("" for none)
}

// DirCacheStats counts what the directory cache did since the union was made.
type DirCacheStats struct {
	Mode string // "per-event", "whole" or "off"
	// Events counts the fanotify events read; in the whole mode, which does not parse
	// them, the reads of a non-empty queue.
	Events uint64
	// Purges counts the times the whole cache was emptied: each non-empty read in the
	// whole mode; a queue overflow or an event it could not read in the per-event mode.
	Purges uint64
	// DirsInvalidated and IdentitiesInvalidated count what events named and dropped
	// (not the identities that went with a dropped directory).
	DirsInvalidated, IdentitiesInvalidated uint64
	Hits, Misses                           uint64 // lookups of a directory by path
	IdentityHits                           uint64
	Dirs, Identities                       int // held now
}

type dirCache struct {
	notify int // fanotify descriptor; -1 when the cache is off
	mode   cacheMode
	// objectFIDs: the per-event group reports each object's own handle too (FAN_REPORT_FID).
	objectFIDs bool
	fsids      map[uint64][8]byte // by device: the layers' filesystems' fsids
	root       *cachedDir

	mu         sync.Mutex
	seq        uint64                               // guarded by mu: events applied (and purges)
	purgedAt   uint64                               // guarded by mu: seq at the last purge
	log        []fanEvent                           // guarded by mu: event s at log[(s-1)%eventLog] (logEventLocked), for the last eventLog
	entries    *simplelru.LRU[string, *cachedDir]   // guarded by mu
	identities *simplelru.LRU[devIno, *identityRec] // guarded by mu: by the object's own device and inode
	byEvent    map[evKey][]string                   // guarded by mu: cached directories by dependency
	byHandle   map[string][]string                  // guarded by mu: cached directories (and the root) by part
	idByParent map[string][]devIno                  // guarded by mu: identities by the directory they go with
	idByPath   map[string][]devIno                  // guarded by mu: by entry path (identityRec.paths)
	idBySelf   map[string][]devIno                  // guarded by mu: by a directory object's fileKey
	buf        []byte                               // guarded by mu: the event read buffer
	stats      DirCacheStats                        // guarded by mu
}

// newDirCache marks the filesystems of roots (the layers' paths, layers their open
// roots, in layer order), asking per-event reports where mode allows and the kernel and
// filesystems give them; any failure leaves the cache off.
func newDirCache(roots []string, layers []*layer.Layer, mode cacheMode) *dirCache {
	if mode == cachePerEvent {
		for _, fids := range []bool{true, false} {
			if c := openDirCache(roots, layers, cachePerEvent, fids); c.on() {
				return c
			}
		}
	}
	return openDirCache(roots, layers, cacheWhole, true)
}

func openDirCache(roots []string, layers []*layer.Layer, mode cacheMode, fids bool) *dirCache {
	off := &dirCache{notify: -1}
	report := uint(unix.FAN_REPORT_FID)
	if mode == cachePerEvent {
		report = unix.FAN_REPORT_DFID_NAME
		if fids {
			report |= unix.FAN_REPORT_FID
		}
	}
	// The kernel's bounded queue: an idle server over a busy filesystem must not grow
	// kernel memory; past the bound the kernel queues an overflow event instead, which
	// empties the cache.
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|report|unix.FAN_NONBLOCK|unix.FAN_CLOEXEC, unix.O_RDONLY)
	if err != nil {
		return off
	}
	c := &dirCache{
		notify: fd, mode: mode, objectFIDs: mode == cachePerEvent && fids, fsids: map[uint64][8]byte{}, buf: make([]byte, eventBuffer),
		byEvent: map[evKey][]string{}, byHandle: map[string][]string{},
		idByParent: map[string][]devIno{}, idByPath: map[string][]devIno{}, idBySelf: map[string][]devIno{},
	}
	fail := func() *dirCache { unix.Close(fd); return off }
	for _, r := range roots {
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, changeEvents, unix.AT_FDCWD, r); err != nil {
			return fail()
		}
	}
	c.root = &cachedDir{}
	for li, l := range layers {
		fsid, err := fsidOf(l.Root)
		if err != nil {
			return fail()
		}
		c.fsids[l.Dev] = fsid
		h, err := handleKey(fsid, l.Root, "")
		if err != nil {
			if mode == cachePerEvent {
				return fail()
			}
			continue
		}
		c.root.lis, c.root.handles = append(c.root.lis, li), append(c.root.handles, h)
		c.byHandle[h] = append(c.byHandle[h], "")
	}
	if c.entries, err = simplelru.NewLRU(defaultDirEntries, c.dirEvicted); err != nil {
		return fail()
	}
	if c.identities, err = simplelru.NewLRU(defaultIdentities, c.identityEvicted); err != nil {
		return fail()
	}
	c.stats.Mode = mode.String()
	return c
}

func (c *dirCache) on() bool { return c != nil && c.notify >= 0 }

// syncLocked reads the event queue and applies what it holds.
func (c *dirCache) syncLocked() {
	for {
		n, err := unix.Read(c.notify, c.buf)
		if n <= 0 || err != nil {
			return
		}
		if c.mode != cachePerEvent {
			c.stats.Events++ // a read's worth: the events are not parsed
			c.purgeLocked()
			continue
		}
		parseEvents(c.buf[:n], c.applyLocked)
	}
}

// purgeLocked empties the cache: what a walk begun before finds is not stored.
func (c *dirCache) purgeLocked() {
	c.seq++
	c.logEventLocked(fanEvent{all: true}) // keeps event s at its place; never matched (purgedAt)
	c.purgedAt = c.seq
	c.stats.Purges++
	counted := c.stats
	c.entries.Purge()
	c.identities.Purge()
	c.root.upperAbsent = nil
	c.stats = counted // the purge is counted, not what it dropped
}

// applyLocked drops what depends on the entry ev names.
func (c *dirCache) applyLocked(ev fanEvent) {
	c.stats.Events++
	if ev.all {
		c.purgeLocked()
		return
	}
	c.seq++
	c.logEventLocked(ev)
	// Each list is taken out of its index before its members go, so that their
	// removal does not search it (a directory's list can be long).
	if paths, ok := c.byEvent[ev.key]; ok {
		delete(c.byEvent, ev.key)
		for _, p := range paths {
			if c.entries.Remove(p) {
				c.stats.DirsInvalidated++
			}
		}
	}
	if ev.self != "" {
		c.dropIdentitiesLocked(c.idBySelf, ev.self, true)
	}
	if ev.key.name == selfName {
		c.dropIdentitiesLocked(c.idBySelf, ev.key.dir, true)
		return
	}
	for _, p := range c.byHandle[ev.key.dir] {
		if cd, ok := c.entries.Peek(p); ok {
			cd.attrsStale = true
			delete(cd.upperAbsent, ev.key.name)
		} else if p == "" {
			delete(c.root.upperAbsent, ev.key.name)
		}
		c.dropIdentitiesLocked(c.idByPath, childKey(p, ev.key.name), true)
	}
}

// upperAbsent reports whether the cache knows that the upper part of d, a directory it
// holds (nil: the root), held nothing at name when last looked, with no change named
// there since. It reads no events: the caller's operation has.
func (c *dirCache) upperAbsent(d *dir, name string) bool {
	if !c.on() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cd := c.root
	if d != nil {
		cd = c.cachedLocked(d)
	}
	if cd == nil {
		return false
	}
	_, ok := cd.upperAbsent[name]
	return ok
}

// attrsExact reports whether d is what the cache holds at its path, with its parts'
// attributes as they were looked up and exact since (atime aside): no event named an
// entry of its parts (they would be attrsStale) nor the directory itself (it would be
// gone). It reads no events: the caller's operation has.
func (c *dirCache) attrsExact(d *dir) bool {
	if !c.on() || len(d.path) == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cd := c.cachedLocked(d)
	return cd != nil && !cd.attrsStale
}

// putUpperAbsent records that the upper part of d (nil: the root), looked in at
// generation gen, held nothing at name, unless d is not what the cache holds or a
// change to that name arrived since.
func (c *dirCache) putUpperAbsent(d *dir, name string, gen uint64) {
	if !c.on() || gen == noGeneration || c.mode != cachePerEvent {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	cd := c.root
	if d != nil {
		cd = c.cachedLocked(d)
	}
	if cd == nil || len(cd.upperAbsent) >= maxUpperAbsent {
		return
	}
	j := slices.Index(cd.lis, 0)
	if j < 0 || j >= len(cd.handles) {
		return // no upper part, or its events cannot be told apart
	}
	at := evKey{dir: cd.handles[j], name: name}
	if c.changedSinceLocked(gen, func(ev fanEvent) bool { return ev.key == at || slices.Contains(cd.deps, ev.key) }) {
		return
	}
	if cd.upperAbsent == nil {
		cd.upperAbsent = map[string]struct{}{}
	}
	cd.upperAbsent[name] = struct{}{}
}

// logEventLocked records ev as event c.seq. Every seq is logged, so until the log is
// full its length is c.seq and the event goes at its end.
func (c *dirCache) logEventLocked(ev fanEvent) {
	i := (c.seq - 1) % eventLog
	if uint64(len(c.log)) <= i {
		c.log = append(c.log, ev)
		return
	}
	c.log[i] = ev
}

// dropIdentitiesLocked drops the identities listed at index[k], and the list.
func (c *dirCache) dropIdentitiesLocked(index map[string][]devIno, k string, counted bool) {
	objs, ok := index[k]
	if !ok {
		return
	}
	delete(index, k)
	for _, obj := range objs {
		if c.identities.Remove(obj) && counted {
			c.stats.IdentitiesInvalidated++
		}
	}
}

// changedSinceLocked reports whether an event since seq gen may matter: one match
// accepts, or one the log no longer holds (or a purge).
func (c *dirCache) changedSinceLocked(gen uint64, match func(fanEvent) bool) bool {
	if gen == c.seq {
		return false
	}
	if gen < c.purgedAt || gen > c.seq || c.seq-gen > eventLog {
		return true
	}
	for s := gen + 1; s <= c.seq; s++ {
		if match(c.log[(s-1)%eventLog]) {
			return true
		}
	}
	return false
}

// dirEvicted runs under mu when a cached directory leaves the cache, however.
func (c *dirCache) dirEvicted(key string, cd *cachedDir) {
	for _, dep := range cd.deps {
		removeFrom(c.byEvent, dep, key)
	}
	for _, h := range cd.handles {
		removeFrom(c.byHandle, h, key)
	}
	c.dropIdentitiesLocked(c.idByParent, key, false)
	cd.d.release()
}

// identityEvicted runs under mu when an identity leaves the cache.
func (c *dirCache) identityEvicted(obj devIno, rec *identityRec) {
	removeFrom(c.idByParent, rec.parent, obj)
	for _, p := range rec.paths {
		removeFrom(c.idByPath, p, obj)
	}
	if rec.self != "" {
		removeFrom(c.idBySelf, rec.self, obj)
	}
}

// removeFrom removes one v from the list at m[k].
func removeFrom[K, V comparable](m map[K][]V, k K, v V) {
	l := m[k]
	i := slices.Index(l, v)
	if i < 0 {
		return
	}
	l[i] = l[len(l)-1]
	if l = l[:len(l)-1]; len(l) == 0 {
		delete(m, k)
	} else {
		m[k] = l
	}
}

// childKey is the path key of name in the directory at path key p.
func childKey(p, name string) string {
	if p == "" {
		return name
	}
	return p + "/" + name
}

// cachedLocked is the cache's record of d, or nil when d is not what the cache holds.
func (c *dirCache) cachedLocked(d *dir) *cachedDir {
	if d == nil {
		return nil
	}
	if len(d.path) == 0 {
		return c.root
	}
	var room keyRoom
	cd, ok := c.entries.Peek(room.key(d.path))
	if !ok || cd.d != d {
		return nil
	}
	return cd
}

// keyRoom is stack memory for the key of a path looked up in the cache: a lookup keeps
// no reference to its key, and a path joined on the heap for each was a fifth of the
// objects a LOOKUP allocated (the toolchain profile).
type keyRoom [256]byte

// key is comps joined by "/" in r's memory, for a map or LRU read only (Get, Peek,
// Contains): the string is valid while r is and until key is called again. A path
// longer than r is joined on the heap.
func (r *keyRoom) key(comps []string) string {
	n := max(len(comps)-1, 0)
	for _, c := range comps {
		n += len(c)
	}
	if n > len(r) {
		return strings.Join(comps, "/")
	}
	b := r[:0]
	for i, c := range comps {
		if i > 0 {
			b = append(b, '/')
		}
		b = append(b, c...)
	}
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// noGeneration is a generation no cache reaches: what is found under it is not stored.
const noGeneration = ^uint64(0)

// generation is the cache's state as a walk starts: pass it to put. It is noGeneration
// when the cache is off.
func (c *dirCache) generation() uint64 {
	if !c.on() {
		return noGeneration
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	return c.seq
}

// get returns the cached directory at comps with a reference for the caller, or nil.
// With synced set, the caller has read the events since its operation began
// (generation) and the queue is not read again: one read per operation, not per
// directory, and still every change completed before the operation began is seen.
func (c *dirCache) get(comps []string, synced bool) *dir {
	return c.lookup(comps, synced, false)
}

// getFresh is get for a caller that reads the directory's attributes from its parts:
// nil where they may be older than the disk's.
func (c *dirCache) getFresh(comps []string, synced bool) *dir {
	return c.lookup(comps, synced, true)
}

func (c *dirCache) lookup(comps []string, synced, fresh bool) *dir {
	var room keyRoom
	key := room.key(comps)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !synced {
		c.syncLocked()
	}
	cd, ok := c.entries.Get(key)
	if !ok || (fresh && cd.attrsStale) {
		c.stats.Misses++
		return nil
	}
	c.stats.Hits++
	cd.d.refs.Add(1)
	return cd.d
}

// longestPrefix returns the deepest cached ancestor of comps (not comps itself) and its
// depth, or nil. It reads no events: call generation first.
func (c *dirCache) longestPrefix(comps []string) (*dir, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var room keyRoom
	for k := len(comps) - 1; k > 0; k-- {
		if cd, ok := c.entries.Get(room.key(comps[:k])); ok {
			cd.d.refs.Add(1)
			return cd.d, k
		}
	}
	return nil, 0
}

// put caches d, a directory a walk begun at generation gen resolved at comps as a child
// of parent, unless parent is not what the cache holds (nor the root) or a change to
// what d depends on arrived since. d must be the walk's own (owned, not yet shared).
// Directories with or below an absolute redirect are not cached: their parts'
// locations, and the places a part could appear, are not in their parents' parts.
func (c *dirCache) put(comps []string, d, parent *dir, gen uint64) {
	if !c.on() || gen == noGeneration || !d.owned || d.cached.Load() || d.base != nil || len(comps) == 0 {
		return
	}
	handles := make([]string, len(d.parts))
	lis := make([]int, len(d.parts))
	for i := range d.parts {
		p := &d.parts[i]
		fsid, ok := c.fsids[p.st.Dev]
		if p.abs != nil || !ok {
			return
		}
		if c.mode == cachePerEvent {
			h, err := handleKey(fsid, p.fd, "")
			if err != nil {
				return
			}
			handles[i] = h
		}
		lis[i] = p.li
	}
	redirects, ok := c.redirectsOf(d)
	if !ok {
		return
	}
	var shared []devIno
	if d.fs != nil && d.fs.shared != nil {
		if shared, ok = d.fs.sharedKeysOf(d); !ok {
			return
		}
	}
	key := strings.Join(comps, "/")
	name := comps[len(comps)-1]
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	if _, ok := c.entries.Peek(key); ok {
		return
	}
	pcd := c.cachedLocked(parent)
	if pcd == nil {
		return
	}
	cd := &cachedDir{d: d, path: key, lis: lis}
	if c.mode == cachePerEvent {
		// The name in every part of the parent (a layer without the directory can gain
		// it, or a whiteout over it), a redirected part's name in its layer's, and each
		// part itself.
		cd.handles = handles
		cd.deps = slices.Grow(slices.Clone(pcd.deps), len(pcd.handles)+2*len(d.parts))
		for _, ph := range pcd.handles {
			cd.deps = append(cd.deps, evKey{dir: ph, name: name})
			for _, r := range redirects {
				cd.deps = append(cd.deps, evKey{dir: ph, name: r})
			}
		}
		for i := range d.parts {
			p := &d.parts[i]
			if p.name != "" && p.name != name {
				j := slices.Index(pcd.lis, p.li)
				if j < 0 {
					return
				}
				cd.deps = append(cd.deps, evKey{dir: pcd.handles[j], name: p.name})
			}
			cd.deps = append(cd.deps, evKey{dir: handles[i], name: selfName})
		}
	}
	if c.changedSinceLocked(gen, func(ev fanEvent) bool {
		if slices.Contains(handles, ev.key.dir) {
			cd.attrsStale = true
		}
		return slices.Contains(cd.deps, ev.key)
	}) {
		return
	}
	if shared != nil {
		d.fs.shared.fds.adopt(d, shared)
	}
	d.refs.Store(2) // the walk's and the cache's
	d.cached.Store(true)
	c.entries.Add(key, cd)
	for _, dep := range cd.deps {
		c.byEvent[dep] = append(c.byEvent[dep], key)
	}
	for _, h := range cd.handles {
		c.byHandle[h] = append(c.byHandle[h], key)
	}
}

// redirectsOf reads the relative redirects of d's parts (per-event mode, where redirects
// are followed): the names the layers below them are searched at in the parent, where a
// directory can appear, part of d, even in a layer d has no part in. False for an
// absolute redirect (not cached: see put) or a redirect that cannot be read.
func (c *dirCache) redirectsOf(d *dir) ([]string, bool) {
	if c.mode != cachePerEvent || d.fs == nil || !d.fs.redirectFollow {
		return nil, true
	}
	var names []string
	for i := range d.parts {
		v, err := layer.Getxattr(d.parts[i].fd, "", d.fs.x.Redirect())
		if err == unix.ENODATA || err == unix.EOPNOTSUPP {
			continue
		}
		if err != nil {
			return nil, false
		}
		t, err := parseRedirect(v)
		if err != nil || t.abs != nil {
			return nil, false
		}
		if !slices.Contains(names, t.rel) {
			names = append(names, t.rel)
		}
	}
	return names, true
}

// identity returns what is remembered of the layer object obj. It reads no events: call
// generation as the operation begins.
func (c *dirCache) identity(obj devIno) (knownIdentity, bool) {
	if !c.on() {
		return knownIdentity{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, ok := c.identities.Get(obj)
	if !ok {
		return knownIdentity{}, false
	}
	c.stats.IdentityHits++
	return rec.k, true
}

// knownGeneration is the generation as last read, without reading events
// (noGeneration when the cache is off): pass it to unchangedSince later.
func (c *dirCache) knownGeneration() uint64 {
	if !c.on() {
		return noGeneration
	}
	return c.currentGeneration()
}

// currentGeneration is generation without reading events, for a walk within an
// operation that has read them.
func (c *dirCache) currentGeneration() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// identityPlace is where an object was found: the entry name (with parts) in the
// resolved directory parent, or, with parent nil, the resolved directory self itself
// (the root with self nil too).
type identityPlace struct {
	parent *dir
	name   string
	parts  []part
	self   *dir
}

// placeWatch is what an event names an object at a place by.
type placeWatch struct {
	names []string // its names in the parent's parts
	self  string   // a directory's own fileKey
}

// watchOf reads what events name the object at pl by; false where the cache cannot
// tell (a part below an absolute redirect, a handle the kernel will not give).
func (c *dirCache) watchOf(pl identityPlace) (placeWatch, bool) {
	if pl.parent == nil {
		return placeWatch{}, true
	}
	w := placeWatch{names: []string{pl.name}}
	for i := range pl.parts {
		p := &pl.parts[i]
		if p.abs != nil {
			return placeWatch{}, false
		}
		if p.name != "" && !slices.Contains(w.names, p.name) {
			w.names = append(w.names, p.name)
		}
	}
	// A directory's own changes name it; a non-directory's name the link they were made
	// through, so an upper one (whose origin xattr its identity reads) is watched by its
	// own handle too, where the group reports objects' handles.
	top := &pl.parts[0]
	if c.mode != cachePerEvent || !layer.IsDir(&top.st) && !(c.objectFIDs && pl.parent.fs.isUpper(top.li)) {
		return w, true
	}
	pp := pl.parent.partFor(top.li)
	fsid, ok := c.fsids[top.st.Dev]
	if pp == nil || !ok {
		return placeWatch{}, false
	}
	at := pl.name
	if top.name != "" {
		at = top.name
	}
	h, err := handleKey(fsid, pp.fd, at)
	if err != nil {
		return placeWatch{}, false
	}
	w.self = h
	return w, true
}

// placeChangedLocked reports whether what the object at pl is may have changed since
// gen: its directory is not what the cache holds, or an event since named it, or, with
// chain set, named what its directory depends on.
func (c *dirCache) placeChangedLocked(gen uint64, pl identityPlace, w placeWatch, chain bool) (*cachedDir, bool) {
	if pl.parent == nil {
		cd := c.root
		if pl.self != nil {
			cd = c.cachedLocked(pl.self)
		}
		return cd, cd == nil || c.changedSinceLocked(gen, func(ev fanEvent) bool { return slices.Contains(cd.deps, ev.key) })
	}
	pcd := c.cachedLocked(pl.parent)
	if pcd == nil {
		return nil, true
	}
	return pcd, c.changedSinceLocked(gen, func(ev fanEvent) bool {
		if chain && slices.Contains(pcd.deps, ev.key) {
			return true
		}
		if w.self != "" && (ev.self == w.self || ev.key == evKey{dir: w.self, name: selfName}) {
			return true
		}
		return ev.key.name != selfName && slices.Contains(pcd.handles, ev.key.dir) && slices.Contains(w.names, ev.key.name)
	})
}

// unchangedSince reports whether the object a lookup begun at gen found at pl is still
// what is there, and what it is made of, with no lookup: no event since gen named it or
// what its directory depends on. False whenever the cache cannot tell. It reads no
// events: call generation first.
func (c *dirCache) unchangedSince(gen uint64, pl identityPlace) bool {
	if !c.on() || gen == noGeneration {
		return false
	}
	w, ok := c.watchOf(pl)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, changed := c.placeChangedLocked(gen, pl, w, true)
	return !changed
}

// putIdentity remembers k for obj, the object at pl found by a lookup begun at
// generation gen, unless a change to it arrived since.
func (c *dirCache) putIdentity(obj devIno, k knownIdentity, pl identityPlace, gen uint64) {
	if !c.on() || gen == noGeneration {
		return
	}
	w, ok := c.watchOf(pl)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	cd, changed := c.placeChangedLocked(gen, pl, w, false)
	if changed {
		return
	}
	rec := &identityRec{k: k, parent: cd.path, self: w.self}
	if pl.parent != nil {
		for _, n := range w.names {
			rec.paths = append(rec.paths, childKey(cd.path, n))
		}
	}
	c.identities.Remove(obj)
	c.identities.Add(obj, rec)
	c.idByParent[rec.parent] = append(c.idByParent[rec.parent], obj)
	for _, p := range rec.paths {
		c.idByPath[p] = append(c.idByPath[p], obj)
	}
	if rec.self != "" {
		c.idBySelf[rec.self] = append(c.idBySelf[rec.self], obj)
	}
}

// stats returns the counters.
func (c *dirCache) statsNow() DirCacheStats {
	if !c.on() {
		return DirCacheStats{Mode: cacheOff.String()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Dirs, s.Identities = c.entries.Len(), c.identities.Len()
	return s
}

// DirCacheStats reports what the directory cache did since the union was made.
func (fs *FS) DirCacheStats() DirCacheStats { return fs.dirs.statsNow() }

func (c *dirCache) close() {
	if !c.on() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries.Purge()
	c.identities.Purge()
	unix.Close(c.notify)
	c.notify = -1
}

// release drops one reference to a cached directory, closing its descriptors with the
// last.
func (d *dir) release() {
	if d.refs.Add(-1) == 0 {
		d.closeFDs()
	}
}
