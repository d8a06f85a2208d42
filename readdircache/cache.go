// Package readdircache keeps merged directory listings: an LRU of immutable
// snapshots keyed by directory identity, built without holding any
// directory lock and published only when no change to the directory landed
// while they were built: a listing built under the directory's lock would make
// every create in a big directory wait for a whole listing.
//
// Correctness rests on three rules:
//
//  1. Every change to a directory's entries is bracketed by BeginChange and
//     EndChange (the union calls them under the directory's lock). Both
//     drop the cached snapshot and spoil any build in flight, and nothing is
//     published while a change is in progress, so a build that may have seen
//     half of a change (a rename's old name gone, its new one not yet read)
//     is never stored or returned.
//  2. A spoiled build is retried, so every snapshot returned was built while
//     no change to its directory was in progress and equals the directory at
//     some instant of the call. A directory whose last lock-free build was
//     spoiled is busy: Get tries it once before giving up with
//     ErrTooManyChanges, since under constant change every further attempt
//     is another whole build thrown away; the caller then excludes changers
//     and calls GetExcluded. (A 50,000-entry directory changed every 2 ms:
//     2 builds and 0.39 s per listing instead of 5 builds and 1.0 s,
//     BenchmarkListingUnderChurn in billyunion.) Changes to entries'
//     attributes only (writes, chmod) call Forget: the cached snapshot is
//     dropped and a build in flight is returned to its callers but not
//     stored.
//  3. A snapshot found in the cache is checked against a cheap signature of
//     the directory's layer parts (stat of each part) before it is served,
//     so changes made to a layer behind the union's back are noticed on the
//     next listing: a union must never serve a merge of layers that no
//     longer exist in that form.
//
// Concurrent requests for the same directory share one build
// (singleflight). Snapshots are immutable and shared; callers that need to
// reorder them (go-nfs sorts in place) copy them first.
//
// Lock order: Cache.mu is a leaf. It is never held while building, while
// waiting for a build, or while calling any function passed in.
package readdircache

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Key names a directory by identity (device and inode of its topmost
// part), so a rename of it or of an ancestor neither loses nor confuses
// its listing.
type Key struct{ Dev, Ino uint64 }

// Signature summarises a directory's layer parts; a change in any part's
// modification or change time, size or inode shows up as a different
// signature.
type Signature string

// Snapshot is one immutable listing.
type Snapshot[E any] struct {
	// ID is unique among all snapshots of a Cache, never 0, and starts
	// at a random point for each Cache; it serves as an NFS cookie
	// verifier.
	ID        uint64
	Key       Key
	Signature Signature
	Entries   []E
}

// Stats counts cache activity for debug logs.
type Stats struct {
	Hits, Misses, Stale, Retries uint64
	Cached                       int
}

// Cache holds the snapshots. The zero value is not usable: use New.
type Cache[E any] struct {
	mu       sync.Mutex
	byKey    *lru.Cache[Key, *Snapshot[E]]
	byID     *lru.Cache[uint64, *Snapshot[E]] // recent snapshots, by verifier
	inflight map[Key]*build[E]                // the build new callers share
	running  map[Key]map[*build[E]]bool       // every build under way, to spoil
	active   map[Key]int                      // changes in progress, by directory
	busy     *lru.Cache[Key, struct{}]        // directories whose last build was spoiled
	nextID   atomic.Uint64

	hits, misses, stale, retries atomic.Uint64

	// beforePublish, when set (tests only), runs after a build finished
	// and before it is published.
	beforePublish func(Key)
}

type build[E any] struct {
	done    chan struct{}
	stale   bool // guarded by Cache.mu: a change overlapped the build
	noStore bool // guarded by Cache.mu: attributes changed; return, don't keep
	snap    *Snapshot[E]
	err     error
}

// ErrTooManyChanges is returned when a directory kept changing during every
// attempt to build its listing; the caller can then exclude changers (the
// union takes the directory lock) and call Get again.
var ErrTooManyChanges = errors.New("readdircache: directory changed during every build attempt")

// maxBuildAttempts bounds the retries of a build that keeps being
// invalidated; every retry means another caller changed the directory.
const maxBuildAttempts = 4

// busyDirectories bounds how many spoiled directories are remembered.
const busyDirectories = 1024

// New returns a cache holding at most entries listings by directory (and as
// many recent snapshots by verifier, for clients paging through an older
// snapshot).
func New[E any](entries int) (*Cache[E], error) {
	if entries < 1 {
		return nil, errors.New("readdircache: size must be at least 1")
	}
	byKey, err := lru.New[Key, *Snapshot[E]](entries)
	if err != nil {
		return nil, err
	}
	byID, err := lru.New[uint64, *Snapshot[E]](entries)
	if err != nil {
		return nil, err
	}
	busy, err := lru.New[Key, struct{}](busyDirectories)
	if err != nil {
		return nil, err
	}
	c := &Cache[E]{byKey: byKey, byID: byID, busy: busy, inflight: map[Key]*build[E]{},
		running: map[Key]map[*build[E]]bool{}, active: map[Key]int{}}
	// IDs are NFS cookie verifiers, which clients keep across a server
	// restart: a restarted cache counting from the same start would hand
	// out a verifier a client still holds for another listing, and go-nfs
	// would then page through the wrong snapshot. A random 64-bit start
	// makes that practically impossible.
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, err
	}
	c.nextID.Store(binary.LittleEndian.Uint64(seed[:]))
	return c, nil
}

// newID returns the next snapshot ID, never 0: go-nfs reads a 0 verifier
// as "none".
func (c *Cache[E]) newID() uint64 {
	for {
		if id := c.nextID.Add(1); id != 0 {
			return id
		}
	}
}

// SetBeforePublishHook installs a hook that runs between the end of a build
// and its publication; tests use it to force interleavings.
func (c *Cache[E]) SetBeforePublishHook(f func(Key)) { c.beforePublish = f }

// Get returns a current snapshot of the directory key. sig is the
// directory's signature now; a cached snapshot with another signature is
// rebuilt. build lists the directory (it runs with no lock held and may be
// shared by concurrent callers); it receives the ID the snapshot will have
// if published, so entries can name their snapshot. A busy directory (its
// last build was spoiled) gets one attempt, others maxBuildAttempts.
func (c *Cache[E]) Get(key Key, sig Signature, buildFn BuildFunc[E]) (*Snapshot[E], error) {
	attempts := maxBuildAttempts
	if c.busy.Contains(key) {
		attempts = 1
	}
	return c.get(key, sig, buildFn, attempts, false)
}

// GetExcluded is Get for a caller that keeps changers of the directory out
// (the union holds its lock): it makes maxBuildAttempts attempts, busy or
// not.
func (c *Cache[E]) GetExcluded(key Key, sig Signature, buildFn BuildFunc[E]) (*Snapshot[E], error) {
	return c.get(key, sig, buildFn, maxBuildAttempts, true)
}

// get makes up to attempts builds; excluded says changers are held off, so a
// build that publishes says nothing about whether the directory is still busy.
func (c *Cache[E]) get(key Key, sig Signature, buildFn BuildFunc[E], attempts int, excluded bool) (*Snapshot[E], error) {
	for attempt := 0; attempt < attempts; attempt++ {
		c.mu.Lock()
		if s, ok := c.byKey.Get(key); ok {
			if s.Signature == sig {
				// Served again, so a client may page through it: keep it findable by
				// its ID however many snapshots other directories made since.
				c.byID.Add(s.ID, s)
				c.mu.Unlock()
				c.hits.Add(1)
				return s, nil
			}
			c.byKey.Remove(key) // changed behind our back
		}
		b, shared := c.inflight[key]
		if !shared {
			b = &build[E]{done: make(chan struct{})}
			c.inflight[key] = b
			if c.running[key] == nil {
				c.running[key] = map[*build[E]]bool{}
			}
			c.running[key][b] = true
		}
		c.mu.Unlock()

		if shared {
			<-b.done
		} else {
			c.misses.Add(1)
			c.run(key, sig, b, buildFn, excluded)
		}
		if b.err != nil {
			return nil, b.err
		}
		if b.snap != nil {
			return b.snap, nil
		}
		c.retries.Add(1) // stale: a change landed during the build
	}
	return nil, ErrTooManyChanges
}

// BuildFunc lists a directory for snapshot id.
type BuildFunc[E any] func(id uint64) ([]E, error)

func (c *Cache[E]) run(key Key, sig Signature, b *build[E], buildFn BuildFunc[E], excluded bool) {
	id := c.newID()
	entries, err := buildFn(id)
	if c.beforePublish != nil {
		c.beforePublish(key)
	}
	c.mu.Lock()
	if c.inflight[key] == b {
		delete(c.inflight, key)
	}
	if delete(c.running[key], b); len(c.running[key]) == 0 {
		delete(c.running, key)
	}
	switch {
	case err != nil:
		b.err = err
	case b.stale || c.active[key] > 0:
		c.stale.Add(1) // dropped: never published, never returned
		c.busy.Add(key, struct{}{})
	default:
		if !excluded {
			c.busy.Remove(key)
		}
		s := &Snapshot[E]{ID: id, Key: key, Signature: sig, Entries: entries}
		if !b.noStore {
			c.byKey.Add(key, s)
		}
		c.byID.Add(s.ID, s)
		b.snap = s
	}
	c.mu.Unlock()
	close(b.done)
}

// BeginChange marks a change to the directory's entries as in progress:
// until the matching EndChange nothing is published for it.
func (c *Cache[E]) BeginChange(key Key) {
	c.mu.Lock()
	c.active[key]++
	c.spoilLocked(key)
	c.mu.Unlock()
}

// EndChange ends a change begun with BeginChange.
func (c *Cache[E]) EndChange(key Key) {
	c.mu.Lock()
	if c.active[key]--; c.active[key] <= 0 {
		delete(c.active, key)
	}
	c.spoilLocked(key)
	c.mu.Unlock()
}

// Invalidate is a change that has already completed: the cached listing is
// dropped and any build in flight spoiled.
func (c *Cache[E]) Invalidate(key Key) {
	c.mu.Lock()
	c.spoilLocked(key)
	c.mu.Unlock()
}

func (c *Cache[E]) spoilLocked(key Key) {
	c.byKey.Remove(key)
	for b := range c.running[key] {
		b.stale = true
	}
	delete(c.inflight, key) // later callers start a fresh build
}

// Forget drops the directory's cached listing after a change to some
// entry's attributes: a build in flight is still returned (its names are
// right) but not kept.
func (c *Cache[E]) Forget(key Key) {
	c.mu.Lock()
	c.byKey.Remove(key)
	for b := range c.running[key] {
		b.noStore = true
	}
	c.mu.Unlock()
}

// ForgetAll is Forget for every directory: an object with several names
// (hard links) changed, and any listing may show it.
func (c *Cache[E]) ForgetAll() {
	c.mu.Lock()
	c.byKey.Purge()
	for _, builds := range c.running {
		for b := range builds {
			b.noStore = true
		}
	}
	c.mu.Unlock()
}

// ByID returns a recent snapshot by its ID (an NFS cookie verifier), even
// if the directory has changed since: a client paging through a listing
// keeps the snapshot it started with.
func (c *Cache[E]) ByID(id uint64) (*Snapshot[E], bool) {
	return c.byID.Get(id)
}

// Stats reports counters and the number of cached listings.
func (c *Cache[E]) Stats() Stats {
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(), Retries: c.retries.Load(),
		Cached: c.byKey.Len(),
	}
}
