// Package readdircache keeps merged directory listings: an LRU of immutable
// snapshots keyed by directory identity, built without holding any
// directory lock and published only when no change to the directory landed
// while they were built (the first seed's lesson).
//
// Correctness rests on three rules:
//
//  1. Every change to a directory through the union calls Invalidate for it
//     after the change is made. Invalidate drops the cached snapshot and
//     marks any build in flight for the directory stale.
//  2. A build that was marked stale is neither published nor returned: it
//     is retried, so every snapshot returned was built while no change to
//     its directory was completing, and equals the directory at some
//     instant of the call.
//  3. A snapshot found in the cache is checked against a cheap signature of
//     the directory's layer parts (stat of each part) before it is served,
//     so changes made to a layer behind the union's back are noticed on the
//     next listing (the third seed's lesson: no stale composition served).
//
// Concurrent requests for the same directory share one build
// (singleflight). Snapshots are immutable and shared; callers that need to
// reorder them (go-nfs sorts in place) copy them first.
//
// Lock order: Cache.mu is a leaf. It is never held while building, while
// waiting for a build, or while calling any function passed in.
package readdircache

import (
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
	// ID is unique among all snapshots of a Cache; it serves as an NFS
	// cookie verifier.
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
	inflight map[Key]*build[E]
	nextID   atomic.Uint64

	hits, misses, stale, retries atomic.Uint64

	// beforePublish, when set (tests only), runs after a build finished
	// and before it is published.
	beforePublish func(Key)
}

type build[E any] struct {
	done  chan struct{}
	stale bool // guarded by Cache.mu
	snap  *Snapshot[E]
	err   error
}

// ErrTooManyChanges is returned when a directory kept changing during every
// attempt to build its listing.
var ErrTooManyChanges = errors.New("readdircache: directory changed during every build attempt")

// maxBuildAttempts bounds the retries of a build that keeps being
// invalidated; every retry means another caller changed the directory.
const maxBuildAttempts = 16

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
	return &Cache[E]{byKey: byKey, byID: byID, inflight: map[Key]*build[E]{}}, nil
}

// SetBeforePublishHook installs a hook that runs between the end of a build
// and its publication; tests use it to force interleavings.
func (c *Cache[E]) SetBeforePublishHook(f func(Key)) { c.beforePublish = f }

// Get returns a current snapshot of the directory key. sig is the
// directory's signature now; a cached snapshot with another signature is
// rebuilt. build lists the directory (it runs with no lock held and may be
// shared by concurrent callers); it receives the ID the snapshot will have
// if published, so entries can name their snapshot, and the number of
// earlier attempts that were spoiled by changes, so that under sustained
// churn it can exclude changers (e.g. take the directory lock) to make
// progress.
func (c *Cache[E]) Get(key Key, sig Signature, buildFn BuildFunc[E]) (*Snapshot[E], error) {
	for attempt := 0; attempt < maxBuildAttempts; attempt++ {
		c.mu.Lock()
		if s, ok := c.byKey.Get(key); ok {
			if s.Signature == sig {
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
		}
		c.mu.Unlock()

		if shared {
			<-b.done
		} else {
			c.misses.Add(1)
			c.run(key, sig, b, buildFn, attempt)
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

// BuildFunc lists a directory for snapshot id; spoiled counts the earlier
// attempts of this Get that changes spoiled.
type BuildFunc[E any] func(id uint64, spoiled int) ([]E, error)

func (c *Cache[E]) run(key Key, sig Signature, b *build[E], buildFn BuildFunc[E], spoiled int) {
	id := c.nextID.Add(1)
	entries, err := buildFn(id, spoiled)
	if c.beforePublish != nil {
		c.beforePublish(key)
	}
	c.mu.Lock()
	if c.inflight[key] == b {
		delete(c.inflight, key)
	}
	switch {
	case err != nil:
		b.err = err
	case b.stale:
		c.stale.Add(1) // dropped: never published, never returned
	default:
		s := &Snapshot[E]{ID: id, Key: key, Signature: sig, Entries: entries}
		c.byKey.Add(key, s)
		c.byID.Add(s.ID, s)
		b.snap = s
	}
	c.mu.Unlock()
	close(b.done)
}

// Invalidate drops the directory's cached listing and spoils any build of
// it in flight. Call it after every change to the directory's entries.
func (c *Cache[E]) Invalidate(key Key) {
	c.mu.Lock()
	c.byKey.Remove(key)
	if b := c.inflight[key]; b != nil {
		b.stale = true
		delete(c.inflight, key) // later callers start a fresh build
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
