package billyunion

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/readdircache"
)

// Shared lower work. Workspaces (unions with uppers of their own) that stack the same
// lowers would each open the lowers, build the merged listing of every lower-only
// directory, decode the same origin records and cache a path per lower object: the same
// work and the same memory, once per workspace. A Shared holds what is the same for all
// of them, and the unions made with Options.Shared use it:
//
//   - the lower layers' descriptors, opened once;
//   - the listings of lower-only directories (no upper part): their merge depends on
//     the lowers alone, so one snapshot serves every workspace; a directory that has an
//     upper part in a workspace (copied up, created) is listed there from its own
//     cache, keyed by the upper directory, as without a Shared. A shared snapshot is
//     checked against the signature of the asking union's parts like any other
//     (readdircache rule 4), so a change made to a lower behind our back is seen by
//     every workspace at its next listing;
//   - the origin-decode cache (inode.go): an origin record names a lower object, and
//     decodes to it in any workspace;
//   - the resolved lower-pure directories (lowercache.go): a lower-only union's
//     directory cache, exact through its own fanotify group, resolves them once for
//     every workspace, and each workspace checks only that its upper holds nothing
//     on the way;
//   - the descriptors of lower directory parts the unions' own directory caches
//     still hold (dircache.go: directories below an upper directory that is opaque
//     or redirected): a lower directory's O_PATH descriptor is opened once and
//     counted (sharedFDs), not once per workspace;
//   - the handle path cache (package handles picks it up through SharedHandlePaths):
//     ObjectID -> path hints, each confirmed by a lookup in the asking union.
//
// What a lower-only listing shows still depends on a few union options, and the
// shared listings are kept per combination of them (sharedVariant): whether the
// union has an upper (layer indices shift by one), whether redirects are followed
// (a refused redirect drops an entry), the Unicode mode, and how inode numbers are
// made (the layer filesystems' indices, which depend on whether the upper shares a
// lower's filesystem). The xattr prefix must be equal: a union asking another is
// refused.
//
// One thing in a lower-only directory differs per workspace: with index=on, a lower
// file with several links whose inode this workspace copied up through another name
// shows the copy (index.go). Shared listings are therefore built without the index,
// and a union with the index on lists from its own cache any lower-only directory
// whose shared snapshot holds a non-directory with more than one link.
//
// Lock order: Shared.mu is a leaf, held for a map operation. sharedFDs.mu is a leaf
// taken under dirCache.mu (a store adopting descriptors, an eviction releasing
// them), for map operations and closing descriptors. The caches' own mutexes
// (readdircache's, golang-lru's) are leaves as documented there.
type Shared struct {
	lowers      []string
	prefix      string
	log         *slog.Logger
	layers      []*layer.Layer // the lowers, top-down
	listingSize int
	origins     *lru.Cache[string, devIno]
	paths       *lru.Cache[string, string]
	// linked remembers, by shared snapshot ID, whether the snapshot holds a
	// non-directory with more than one link (see above); a miss is computed again.
	linked *lru.Cache[uint64, bool]

	fds sharedFDs

	mu       sync.Mutex
	listings map[sharedVariant]*readdircache.Cache[os.FileInfo] // guarded by mu
	lowerFSs map[lowerVariant]*FS                               // guarded by mu: the lower-only unions (lowercache.go); nil where none could be made
	users    int                                                // guarded by mu: unions open on it
	closed   bool                                               // guarded by mu
}

// SharedOptions configures a Shared.
type SharedOptions struct {
	// Lowers are the read-only layers, topmost first, as Options.Lowers.
	Lowers []string
	// XattrPrefix is as Options.XattrPrefix ("" picks the same way); every union
	// using the Shared must resolve to the same prefix.
	XattrPrefix string
	// DirCacheEntries bounds the shared listings of lower-only directories (per
	// sharedVariant, and as many recent snapshots); 0 means DefaultDirCacheEntries.
	DirCacheEntries int
	// HandleCacheEntries bounds the shared handle path cache; 0 means
	// DefaultSharedHandleEntries.
	HandleCacheEntries int
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// DefaultSharedHandleEntries is the shared handle path cache's size when none is
// configured: handles.DefaultCacheEntries.
const DefaultSharedHandleEntries = 1 << 18

// sharedVariant is what, besides the lowers, a lower-only listing depends on.
type sharedVariant struct {
	hasUpper, follow, unicode bool
	numbering                 string // the lowers' filesystem indices and the index bits
}

// NewShared opens the lowers once, for the unions that name it in Options.Shared.
func NewShared(opts SharedOptions) (*Shared, error) {
	if len(opts.Lowers) == 0 {
		return nil, fmt.Errorf("billyunion: at least one lower layer is required: %w", syscall.EINVAL)
	}
	prefix, err := xattrPrefix(opts.XattrPrefix)
	if err != nil {
		return nil, err
	}
	s := &Shared{lowers: slices.Clone(opts.Lowers), prefix: prefix, log: opts.Logger, listingSize: opts.DirCacheEntries,
		listings: map[sharedVariant]*readdircache.Cache[os.FileInfo]{}, lowerFSs: map[lowerVariant]*FS{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.listingSize == 0 {
		s.listingSize = DefaultDirCacheEntries
	}
	if s.listingSize < 0 || opts.HandleCacheEntries < 0 {
		return nil, fmt.Errorf("billyunion: cache sizes must be positive: %w", syscall.EINVAL)
	}
	handleSize := opts.HandleCacheEntries
	if handleSize == 0 {
		handleSize = DefaultSharedHandleEntries
	}
	ok := false
	defer func() {
		if !ok {
			s.closeLayers()
		}
	}()
	for _, p := range s.lowers {
		l, err := layer.Open(p)
		if err != nil {
			return nil, fmt.Errorf("billyunion: %w", err)
		}
		s.layers = append(s.layers, l)
	}
	s.origins, _ = lru.New[string, devIno](1 << 16)
	if s.paths, err = lru.New[string, string](handleSize); err != nil {
		return nil, fmt.Errorf("billyunion: %w", err)
	}
	if s.linked, err = lru.New[uint64, bool](4 * s.listingSize); err != nil {
		return nil, fmt.Errorf("billyunion: %w", err)
	}
	ok = true
	return s, nil
}

// Close releases the lowers' descriptors; EBUSY while a union made with it is open.
func (s *Shared) Close() error {
	s.mu.Lock()
	if s.users > 0 {
		s.mu.Unlock()
		return fmt.Errorf("billyunion: shared lowers still used by %d unions: %w", s.users, syscall.EBUSY)
	}
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	lowerFSs := s.lowerFSs
	s.lowerFSs = map[lowerVariant]*FS{}
	s.mu.Unlock()
	for _, u := range lowerFSs {
		if u != nil {
			u.Close()
		}
	}
	s.closeLayers()
	return nil
}

func (s *Shared) closeLayers() {
	s.fds.closeAll()
	for _, l := range s.layers {
		l.Close()
	}
	s.layers = nil
}

// ListingStats sums the counters of the shared listing caches.
func (s *Shared) ListingStats() readdircache.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t readdircache.Stats
	for _, c := range s.listings {
		st := c.Stats()
		t.Hits += st.Hits
		t.Misses += st.Misses
		t.Stale += st.Stale
		t.Retries += st.Retries
		t.Mended += st.Mended
		t.MendRounds += st.MendRounds
		t.MendLookups += st.MendLookups
		t.Cached += st.Cached
	}
	return t
}

// attach registers a union being made with opts and returns the lower layers it
// uses; it refuses options that cannot share these lowers.
func (s *Shared) attach(opts *Options, prefix string) ([]*layer.Layer, error) {
	if len(opts.Lowers) != 0 && !slices.Equal(opts.Lowers, s.lowers) {
		return nil, fmt.Errorf("billyunion: lowers %s differ from the shared lowers %s: %w",
			strings.Join(opts.Lowers, ":"), strings.Join(s.lowers, ":"), syscall.EINVAL)
	}
	if prefix != s.prefix {
		return nil, fmt.Errorf("billyunion: xattr prefix %q differs from the shared lowers' %q: %w", prefix, s.prefix, syscall.EINVAL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("billyunion: the shared lowers are closed: %w", syscall.EINVAL)
	}
	s.users++
	return s.layers, nil
}

// detach is attach undone, when the union closes.
func (s *Shared) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users--
}

// listingsFor returns the shared listing cache of the unions like fs.
func (s *Shared) listingsFor(fs *FS) (*readdircache.Cache[os.FileInfo], error) {
	v := sharedVariant{hasUpper: fs.hasUpper, follow: fs.redirectFollow, unicode: fs.unicodeInsensitive, numbering: s.numbering(fs)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.listings[v]; ok {
		return c, nil
	}
	c, err := readdircache.New[os.FileInfo](s.listingSize)
	if err != nil {
		return nil, err
	}
	s.listings[v] = c
	return c, nil
}

// numbering is how fs numbers the lowers' objects (inode numbers, ObjectIDs): the
// lowers' filesystem indices and the index bits.
func (s *Shared) numbering(fs *FS) string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(fs.ino.fsBits), 10))
	for _, l := range s.layers {
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(fs.ino.fsIndex[l.Dev], 10))
	}
	return b.String()
}

// hasLinked reports whether the shared snapshot holds a non-directory with more than
// one link: a union with the index on shows such an entry as its own copy-ups decide.
func (s *Shared) hasLinked(snap *readdircache.Snapshot[os.FileInfo]) bool {
	if v, ok := s.linked.Get(snap.ID); ok {
		return v
	}
	linked := false
	for _, e := range snap.Entries {
		if fi, ok := e.(*fileInfo); ok && !fi.IsDir() && fi.st.Nlink > 1 {
			linked = true
			break
		}
	}
	s.linked.Add(snap.ID, linked)
	return linked
}

// SharedHandlePaths is the handle path cache shared by the unions of one Shared (nil
// without one): package handles uses it instead of a cache of its own. Its entries
// are ObjectID -> path hints, which handles confirms with a lookup in its own union
// before use, so another workspace's path for an object costs a lookup, never a
// wrong answer.
func (fs *FS) SharedHandlePaths() *lru.Cache[string, string] {
	if fs.shared == nil {
		return nil
	}
	return fs.shared.paths
}

// xattrPrefix resolves Options.XattrPrefix.
func xattrPrefix(p string) (string, error) {
	if p == "" {
		p = "user.overlay."
		if os.Geteuid() == 0 {
			p = "trusted.overlay."
		}
	}
	if p != "trusted.overlay." && p != "user.overlay." {
		return "", fmt.Errorf("billyunion: xattr prefix %q: must be trusted.overlay. or user.overlay.: %w", p, syscall.EINVAL)
	}
	return p, nil
}

// sharedFDs counts the lower directory descriptors the unions' directory caches
// share, by the directory's device and inode: an open descriptor pins its inode, so
// the pair names one live directory while it is held.
type sharedFDs struct {
	mu sync.Mutex
	m  map[devIno]*sharedFD // guarded by mu
}

type sharedFD struct {
	fd   int
	refs int
}

// adopt makes d's lower parts (keys[i] for part i; zero for an upper part) use the
// shared descriptors of their directories, closing d's own where one is shared
// already. d is a walk's own, not yet cached. Called under dirCache.mu.
func (t *sharedFDs) adopt(d *dir, keys []devIno) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[devIno]*sharedFD{}
	}
	for i := range d.parts {
		k := keys[i]
		if k == (devIno{}) {
			continue
		}
		p := &d.parts[i]
		if sf, ok := t.m[k]; ok {
			unix.Close(p.fd)
			p.fd = sf.fd
			sf.refs++
			continue
		}
		t.m[k] = &sharedFD{fd: p.fd, refs: 1}
	}
	d.sharedKeys, d.sharedFDs = keys, t
}

// release drops one reference to the shared descriptor of k, closing it with the last.
func (t *sharedFDs) release(k devIno) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sf, ok := t.m[k]
	if !ok {
		return
	}
	if sf.refs--; sf.refs == 0 {
		unix.Close(sf.fd)
		delete(t.m, k)
	}
}

// open is how many shared descriptors are open.
func (t *sharedFDs) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

func (t *sharedFDs) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, sf := range t.m {
		unix.Close(sf.fd)
		delete(t.m, k)
	}
}

// sharedKeysOf reads, for a walk's own d about to be cached, the device and inode of
// each lower part's descriptor (zero for an upper part); false when one cannot be read.
func (fs *FS) sharedKeysOf(d *dir) ([]devIno, bool) {
	keys := make([]devIno, len(d.parts))
	for i := range d.parts {
		p := &d.parts[i]
		if fs.isUpper(p.li) {
			continue
		}
		st, err := layer.Fstat(p.fd)
		if err != nil {
			return nil, false
		}
		keys[i] = devIno{st.Dev, st.Ino}
	}
	return keys, true
}
