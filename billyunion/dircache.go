package billyunion

import (
	"strings"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sys/unix"
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
// change completed before it; any event empties the whole cache. A walk stores what it
// resolved only if no event arrived between its start and its store, so a walk that
// raced a change never leaves a state that no longer exists.
//
// The same exactness lets the cache remember what the identity rule (stem.go) made of a
// layer object, keyed by the object's device and inode: its stem and its ObjectID. A
// lookup of a hot name then reads no origin xattr and asks the kernel for no file
// handle. An inode number is only reused after its object was removed, which is an event
// and empties this memory too; the origin xattr and the parts a name merges change only
// with events as well.
//
// Without CAP_SYS_ADMIN, or on a filesystem fanotify cannot mark, there is no cache and
// every path is walked.
//
// Lock order: dirCache.mu is a leaf, held for the queue read and the map operation; no
// descriptor is opened under it (closing evicted ones is).

// defaultDirEntries bounds the cached directories; each holds a descriptor per part.
const defaultDirEntries = 1024

// defaultIdentities bounds the remembered identities (about 150 bytes each).
const defaultIdentities = 1 << 16

// knownIdentity is what the identity rule made of a layer object.
type knownIdentity struct {
	stem devIno
	id   ObjectID
}

// changeEvents are the fanotify events that can change how a path resolves.
const changeEvents = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO |
	unix.FAN_ATTRIB | unix.FAN_DELETE_SELF | unix.FAN_MOVE_SELF | unix.FAN_ONDIR

type dirCache struct {
	notify int // fanotify descriptor; -1 when the cache is off

	mu         sync.Mutex
	gen        uint64                            // guarded by mu: counts the times changes emptied the cache
	entries    *lru.Cache[string, *dir]          // guarded by mu
	identities *lru.Cache[devIno, knownIdentity] // guarded by mu: by the object's own device and inode
	buf        []byte                            // guarded by mu: the event read buffer
}

// newDirCache marks the filesystems of roots; any failure leaves the cache off.
func newDirCache(roots []string) *dirCache {
	c := &dirCache{notify: -1}
	// The kernel's bounded queue: an idle server over a busy filesystem must not grow
	// kernel memory; past the bound the kernel queues an overflow event instead, which
	// empties the cache like any other.
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_FID|unix.FAN_NONBLOCK|unix.FAN_CLOEXEC, unix.O_RDONLY)
	if err != nil {
		return c
	}
	for _, r := range roots {
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, changeEvents, unix.AT_FDCWD, r); err != nil {
			unix.Close(fd)
			return c
		}
	}
	entries, err := lru.NewWithEvict[string, *dir](defaultDirEntries, func(_ string, d *dir) { d.release() })
	if err != nil {
		unix.Close(fd)
		return c
	}
	identities, err := lru.New[devIno, knownIdentity](defaultIdentities)
	if err != nil {
		unix.Close(fd)
		return c
	}
	c.notify, c.entries, c.identities, c.buf = fd, entries, identities, make([]byte, 64<<10)
	return c
}

func (c *dirCache) on() bool { return c != nil && c.notify >= 0 }

// syncLocked reads the event queue and empties the cache if anything changed.
func (c *dirCache) syncLocked() {
	changed := false
	for {
		n, err := unix.Read(c.notify, c.buf)
		if n <= 0 || err != nil {
			break
		}
		changed = true
	}
	if changed {
		c.gen++
		c.entries.Purge()
		c.identities.Purge()
	}
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
	return c.gen
}

// get returns the cached directory at comps with a reference for the caller, or nil.
// With synced set, the caller has read the events since its operation began
// (generation) and the queue is not read again: one read per operation, not per
// directory, and still every change completed before the operation began is seen.
func (c *dirCache) get(comps []string, synced bool) *dir {
	key := strings.Join(comps, "/")
	c.mu.Lock()
	defer c.mu.Unlock()
	if !synced {
		c.syncLocked()
	}
	d, ok := c.entries.Get(key)
	if !ok {
		return nil
	}
	d.refs.Add(1)
	return d
}

// longestPrefix returns the deepest cached ancestor of comps (not comps itself) and its
// depth, or nil. It reads no events: call generation first.
func (c *dirCache) longestPrefix(comps []string) (*dir, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := len(comps) - 1; k > 0; k-- {
		if d, ok := c.entries.Get(strings.Join(comps[:k], "/")); ok {
			d.refs.Add(1)
			return d, k
		}
	}
	return nil, 0
}

// put caches d, a directory a walk begun at generation gen resolved at comps, unless a
// change arrived since. d must be the walk's own (owned, not yet shared).
func (c *dirCache) put(comps []string, d *dir, gen uint64) {
	if !d.owned || d.cached.Load() {
		return
	}
	key := strings.Join(comps, "/")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	if c.gen != gen {
		return
	}
	if _, ok := c.entries.Peek(key); ok {
		return
	}
	d.refs.Store(2) // the walk's and the cache's
	d.cached.Store(true)
	c.entries.Add(key, d)
}

// identity returns what is remembered of the layer object obj. It reads no events: call
// generation as the operation begins.
func (c *dirCache) identity(obj devIno) (knownIdentity, bool) {
	if !c.on() {
		return knownIdentity{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.identities.Get(obj)
}

// knownGeneration is the generation as last read, without reading events
// (noGeneration when the cache is off): a later generation equal to it means no change
// at all since.
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
	return c.gen
}

// putIdentity remembers k for obj, found by a lookup begun at generation gen, unless a
// change arrived since.
func (c *dirCache) putIdentity(obj devIno, k knownIdentity, gen uint64) {
	if !c.on() || gen == noGeneration {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncLocked()
	if c.gen == gen {
		c.identities.Add(obj, k)
	}
}

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
