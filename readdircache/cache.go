// Package readdircache keeps merged directory listings: an LRU of immutable
// snapshots keyed by directory identity, built without holding any
// directory lock and published only as the directory was at one instant: a
// listing built under the directory's lock would make every create in a big
// directory wait for a whole listing.
//
// Correctness rests on four rules:
//
//  1. Every change to a directory's entries is bracketed by BeginChange and
//     EndChange (the union calls them under the directory's lock, and its
//     lock serialises the changes of one directory). BeginChange names the
//     entries the change touches. Both drop the cached snapshot and spoil
//     any build in flight, recording in it the names changed, and nothing
//     is published while a change is in progress, so a build that may have
//     seen half of a change (a rename's old name gone, its new one not yet
//     read) is never stored or returned as it is.
//  2. A spoiled build is mended, not thrown away (Source: a listing made of
//     candidate names and one lookup per name). Once no change is in
//     progress (the mend waits for the one in progress to end, holding no
//     lock), only the names recorded since the last check are looked up
//     again and patched into the sorted entries; if no change began in the
//     meantime, every entry is as the directory was when the round began,
//     and the listing is published. Otherwise the names changed during the
//     round are looked up in another one, up to maxMendRounds. A build that
//     cannot be mended (a change with unknown names, or more than
//     maxChangedNames names changed since the last check) is dropped and
//     built once more, lock-free, up to maxBuildAttempts whole builds; then
//     Get reports ErrTooManyChanges. Under a change every 2 ms a listing of
//     a 100,000-entry directory costs one build and a few dozen lookups
//     (BenchmarkListingUnderChurn in billyunion).
//  3. Changes to entries' attributes only (writes, chmod) call Forget: the
//     cached snapshot is dropped and a build in flight is returned to its
//     callers but not stored.
//  4. A snapshot found in the cache is checked against a cheap signature of
//     the directory's layer parts (stat of each part) before it is served,
//     so changes made to a layer behind the union's back are noticed on the
//     next listing: a union must never serve a merge of layers that no
//     longer exist in that form.
//
// Concurrent requests for the same directory share one build
// (singleflight), a spoiled one that is being mended included: the mended
// listing is the directory at an instant after the last check began and no
// change landed between then and its publication, so it is the directory
// at an instant of every sharer's call. Snapshots are immutable and shared;
// callers that need to reorder them (go-nfs sorts in place) copy them
// first.
//
// Lock order: Cache.mu is a leaf. It is never held while building, while
// waiting for a build or for a change to end, or while calling any function
// passed in. Nothing in this package waits for a lock of its callers; a
// mend waits for EndChange, which a change calls without waiting for any
// listing.
package readdircache

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"slices"
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
	// Misses counts whole builds; Stale, builds dropped unpublished;
	// Retries, calls that went on to another build after a dropped one.
	Hits, Misses, Stale, Retries uint64
	// Mended counts builds published after mending; MendRounds, the
	// rounds of lookups made to mend them; MendLookups, the names looked
	// up again in those rounds.
	Mended, MendRounds, MendLookups uint64
	Cached                          int
}

// Cache holds the snapshots. The zero value is not usable: use New.
type Cache[E any] struct {
	mu       sync.Mutex
	byKey    *lru.Cache[Key, *Snapshot[E]]
	byID     *lru.Cache[uint64, *Snapshot[E]] // recent snapshots, by verifier
	inflight map[Key]*build[E]                // the build new callers share
	running  map[Key]map[*build[E]]bool       // every build under way, to spoil
	active   map[Key]*activity                // changes in progress, by directory
	nextID   atomic.Uint64

	// maxChanged bounds the names a build records (maxChangedNames;
	// tests lower it).
	maxChanged int

	hits, misses, stale, retries    atomic.Uint64
	mended, mendRounds, mendLookups atomic.Uint64

	// Test hooks (SetBeforePublishHook, SetAfterNamesHook,
	// SetBeforeMendHook), nil otherwise.
	afterNames, beforeCheck, beforeMend func(Key)
}

// activity is the changes in progress in one directory. The directory's lock
// serialises them, so n is 1 (2 for a rename within one directory) and
// names holds a handful of names.
type activity struct {
	n       int
	names   []string // the names of every change begun since n was last 0
	unknown bool     // one of them named none, or too many
	quiet   chan struct{}
}

type build[E any] struct {
	done     chan struct{}
	mendable bool // made of names and lookups (Source.Names)
	// Guarded by Cache.mu:
	spoiled bool                // a change began, ended or completed since the last check
	changed map[string]struct{} // the names those changes touched
	unknown bool                // some change named none, or too many: only a new build will do
	noStore bool                // attributes changed; return, don't keep
	snap    *Snapshot[E]
	err     error
}

// ErrTooManyChanges is returned when a directory kept changing during every
// attempt to build and mend its listing.
var ErrTooManyChanges = errors.New("readdircache: directory changed during every build attempt")

const (
	// maxBuildAttempts bounds the whole builds of one Get: one, and one
	// more when the first could not be mended.
	maxBuildAttempts = 2
	// maxMendRounds bounds the rounds (a wait for a change to end, or
	// the lookups of the names changed since the last round) that mend
	// one build.
	maxMendRounds = 64
	// maxChangedNames bounds the names a build records; more changed
	// since one check and the build is made again instead.
	maxChangedNames = 4096
)

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
	c := &Cache[E]{byKey: byKey, byID: byID, inflight: map[Key]*build[E]{},
		running: map[Key]map[*build[E]]bool{}, active: map[Key]*activity{},
		maxChanged: maxChangedNames}
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

// SetBeforePublishHook installs a hook that runs before every check of
// whether a build can be published: after the build, and after each round
// of mending it. Tests use it to force interleavings; set it before the
// cache is used.
func (c *Cache[E]) SetBeforePublishHook(f func(Key)) { c.beforeCheck = f }

// SetAfterNamesHook installs a hook that runs in a Source build between
// reading the candidate names and looking them up (tests only; set it
// before the cache is used).
func (c *Cache[E]) SetAfterNamesHook(f func(Key)) { c.afterNames = f }

// SetBeforeMendHook installs a hook that runs in each round of mending,
// after the names to look up again were taken and before they are looked
// up (tests only; set it before the cache is used).
func (c *Cache[E]) SetBeforeMendHook(f func(Key)) { c.beforeMend = f }

// BuildFunc lists a whole directory for snapshot id.
type BuildFunc[E any] func(id uint64) ([]E, error)

// Source lists one directory. With Names and Lookup a spoiled build is
// mended by looking up again the names changes recorded; with Build only it
// is made again.
type Source[E any] struct {
	// Names returns the directory's candidate names, sorted (by Go
	// string order) and without duplicates.
	Names func() ([]string, error)
	// Lookup returns the entry the name shows now, for snapshot id, or
	// false when it shows none.
	Lookup func(id uint64, name string) (e E, ok bool, err error)
	// ListedLookup, if set, is Lookup for the i-th name of the Names call
	// just made, in a whole build: a source can use what reading the names
	// told it (such as which layers hold a name). Mending, which looks up
	// names that changed since, always calls Lookup.
	ListedLookup func(id uint64, i int, name string) (e E, ok bool, err error)
	// Build lists the whole directory when Names is nil.
	Build BuildFunc[E]
	// Published, if set, is called with the entries of a listing this
	// call built and published (with no lock held; the entries are the
	// snapshot's: read, never write them).
	Published func(entries []E)
}

// Get returns a current snapshot of the directory key, built by buildFn,
// which cannot be mended: a spoiled build is made again. See List.
func (c *Cache[E]) Get(key Key, sig Signature, buildFn BuildFunc[E]) (*Snapshot[E], error) {
	return c.List(key, sig, Source[E]{Build: buildFn})
}

// List returns a current snapshot of the directory key. sig is the
// directory's signature now; a cached snapshot with another signature is
// rebuilt. src lists the directory (with no lock held; a build may be shared
// by concurrent callers); it receives the ID the snapshot will have if
// published, so entries can name their snapshot.
func (c *Cache[E]) List(key Key, sig Signature, src Source[E]) (*Snapshot[E], error) {
	for attempt := 0; attempt < maxBuildAttempts; attempt++ {
		if attempt > 0 {
			c.retries.Add(1) // dropped: a change the build could not mend
		}
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
			b = &build[E]{done: make(chan struct{}), mendable: src.Names != nil}
			if a := c.active[key]; a != nil {
				// Begun before us: its names may be half changed.
				b.recordLocked(c.maxChanged, a.names, a.unknown)
			}
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
			c.run(key, sig, b, src)
		}
		if b.err != nil {
			return nil, b.err
		}
		if b.snap != nil {
			return b.snap, nil
		}
	}
	return nil, ErrTooManyChanges
}

// recordLocked spoils b with a change to names (none: unknown names).
func (b *build[E]) recordLocked(limit int, names []string, unknown bool) {
	b.spoiled = true
	if b.unknown {
		return
	}
	if unknown || len(names) == 0 || !b.mendable {
		b.unknown, b.changed = true, nil
		return
	}
	if b.changed == nil {
		b.changed = make(map[string]struct{}, len(names))
	}
	for _, n := range names {
		b.changed[n] = struct{}{}
	}
	if len(b.changed) > limit {
		b.unknown, b.changed = true, nil
	}
}

// run builds, mends and publishes (or drops) b.
func (c *Cache[E]) run(key Key, sig Signature, b *build[E], src Source[E]) {
	id := c.newID()
	names, entries, err := c.buildAll(key, id, src)
	mended := false
	for round := 0; ; round++ {
		if err == nil && c.beforeCheck != nil {
			c.beforeCheck(key)
		}
		c.mu.Lock()
		if err != nil || !b.spoiled || b.unknown || !b.mendable || round == maxMendRounds {
			break // with c.mu held
		}
		if a := c.active[key]; a != nil {
			// A change is in progress: its names may be half changed
			// until it ends.
			quiet := a.quiet
			c.mu.Unlock()
			<-quiet
			continue
		}
		// The check: from now on every change is recorded in b again.
		changed := b.changed
		b.changed, b.spoiled = nil, false
		c.mu.Unlock()
		if c.beforeMend != nil {
			c.beforeMend(key)
		}
		c.mendRounds.Add(1)
		c.mendLookups.Add(uint64(len(changed)))
		names, entries, err = mend(src, id, names, entries, changed)
		mended = true
	}
	// c.mu is held.
	published := false
	if c.inflight[key] == b {
		delete(c.inflight, key)
	}
	if delete(c.running[key], b); len(c.running[key]) == 0 {
		delete(c.running, key)
	}
	switch {
	case err != nil:
		b.err = err
	case b.spoiled || c.active[key] != nil:
		c.stale.Add(1) // dropped: never published, never returned
	default:
		s := &Snapshot[E]{ID: id, Key: key, Signature: sig, Entries: entries}
		if !b.noStore {
			c.byKey.Add(key, s)
		}
		c.byID.Add(s.ID, s)
		b.snap = s
		published = true
		if mended {
			c.mended.Add(1)
		}
	}
	c.mu.Unlock()
	close(b.done)
	if published && src.Published != nil {
		src.Published(entries)
	}
}

// buildAll makes a whole listing: Build, or every candidate name looked up.
// names holds the names of entries (nil for Build).
func (c *Cache[E]) buildAll(key Key, id uint64, src Source[E]) (names []string, entries []E, err error) {
	if src.Names == nil {
		entries, err = src.Build(id)
		return nil, entries, err
	}
	candidates, err := src.Names()
	if err != nil {
		return nil, nil, err
	}
	if c.afterNames != nil {
		c.afterNames(key)
	}
	names = candidates[:0]
	entries = make([]E, 0, len(candidates))
	for i, n := range candidates {
		var e E
		var ok bool
		var err error
		if src.ListedLookup != nil {
			e, ok, err = src.ListedLookup(id, i, n)
		} else {
			e, ok, err = src.Lookup(id, n)
		}
		if err != nil {
			return nil, nil, err
		}
		if ok {
			names = append(names, n)
			entries = append(entries, e)
		}
	}
	return names, entries, nil
}

// mend looks the changed names up again and patches them into the sorted
// listing names/entries: replaced, removed or inserted in order.
func mend[E any](src Source[E], id uint64, names []string, entries []E, changed map[string]struct{}) ([]string, []E, error) {
	todo := make([]string, 0, len(changed))
	for n := range changed {
		todo = append(todo, n)
	}
	slices.Sort(todo)
	found := make([]E, len(todo))
	shows := make([]bool, len(todo))
	at := make([]int, len(todo))
	inPlace := true // every name shows as before or not at all: no entry moves
	for i, n := range todo {
		var err error
		if found[i], shows[i], err = src.Lookup(id, n); err != nil {
			return nil, nil, err
		}
		var present bool
		at[i], present = slices.BinarySearch(names, n)
		if present != shows[i] {
			inPlace = false
		}
	}
	if inPlace {
		for i := range todo {
			if shows[i] {
				entries[at[i]] = found[i]
			}
		}
		return names, entries, nil
	}
	outNames := make([]string, 0, len(names)+len(todo))
	outEntries := make([]E, 0, len(entries)+len(todo))
	next := 0 // the first old entry not yet copied or dropped
	for i, n := range todo {
		outNames = append(outNames, names[next:at[i]]...)
		outEntries = append(outEntries, entries[next:at[i]]...)
		next = at[i]
		if next < len(names) && names[next] == n {
			next++ // the old entry: dropped or replaced
		}
		if shows[i] {
			outNames = append(outNames, n)
			outEntries = append(outEntries, found[i])
		}
	}
	outNames = append(outNames, names[next:]...)
	outEntries = append(outEntries, entries[next:]...)
	return outNames, outEntries, nil
}

// BeginChange marks a change to the directory's entries at names as in
// progress: until the matching EndChange nothing is published for it, and
// builds in flight look those names up again. A change that names nothing
// may have changed any entry: builds in flight are made again.
func (c *Cache[E]) BeginChange(key Key, names ...string) {
	c.mu.Lock()
	a := c.active[key]
	if a == nil {
		a = &activity{quiet: make(chan struct{})}
		c.active[key] = a
	}
	a.n++
	switch {
	case len(names) == 0:
		a.unknown, a.names = true, nil
	case !a.unknown:
		if a.names = append(a.names, names...); len(a.names) > c.maxChanged {
			a.unknown, a.names = true, nil
		}
	}
	c.spoilLocked(key, names, len(names) == 0)
	c.mu.Unlock()
}

// EndChange ends a change begun with BeginChange.
func (c *Cache[E]) EndChange(key Key) {
	c.mu.Lock()
	if a := c.active[key]; a != nil {
		if a.n--; a.n <= 0 {
			delete(c.active, key)
			close(a.quiet)
		}
	}
	c.spoilLocked(key, nil, false)
	c.mu.Unlock()
}

// Invalidate is a change that has already completed, to entries it does not
// name: the cached listing is dropped and any build in flight made again.
func (c *Cache[E]) Invalidate(key Key) {
	c.mu.Lock()
	c.spoilLocked(key, nil, true)
	c.mu.Unlock()
}

// spoilLocked drops the cached listing and records a change to names
// (unknown: to any) in every build in flight; with neither, it only spoils
// them (the end of a change whose names they have).
func (c *Cache[E]) spoilLocked(key Key, names []string, unknown bool) {
	c.byKey.Remove(key)
	for b := range c.running[key] {
		if len(names) > 0 || unknown {
			b.recordLocked(c.maxChanged, names, unknown)
		} else {
			b.spoiled = true
		}
	}
	if b := c.inflight[key]; b != nil && b.unknown {
		delete(c.inflight, key) // later callers start a fresh build
	}
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
		Mended: c.mended.Load(), MendRounds: c.mendRounds.Load(), MendLookups: c.mendLookups.Load(),
		Cached: c.byKey.Len(),
	}
}
