package billyunion

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// The shared lower directory cache. Workspaces of one Shared (shared.go) resolve the
// same lower directories over and over, and each workspace's directory cache
// (dircache.go) would keep its own copy of every one it met: its parts, its dependency
// set and its place in the event indexes, about 1.5 KB a directory, and with it the
// identities found there. For 50 workspaces over a lower tree that is 50 copies of
// the same resolutions.
//
// A directory is lower-pure in a workspace when it resolves to exactly the parts the
// lowers alone give at its path: the root is; a child of a lower-pure directory is
// unless its upper part is opaque or any part is found through a redirect (both change
// which lower directories it merges). Below a lower-pure directory whose upper part
// has no entry at the next name (not even a whiteout), the whole rest of the path is
// the lowers' alone, whatever it is. There the workspace asks the Shared's lower-only
// union (one per variant of the options that change a lower lookup: redirects
// followed or not, Unicode mode), whose own directory cache, exact through its own
// fanotify group on the lowers' filesystems, holds the lower directory once for every
// workspace, and hands the caller a view of it with the layer indices shifted under
// the workspace's upper (lowerView).
//
// What the workspace checks itself, every time, is the one thing that differs per
// workspace: that its upper holds nothing at that name (one fstatat in the deepest
// upper directory on the path). Its own directory cache keeps only directories that
// have an upper part, or lie below one that is not lower-pure, so the upper's changes
// stay exact through its own events as before. A view is not a cached directory of
// the workspace: nothing is stored under it in the workspace's cache (put refuses a
// child of a directory it does not hold), so identities of objects found in a view
// are remembered by the lower-only union's cache instead, for every workspace of the
// variant (lowerIdentityPlace).
//
// A workspace that does not share its lowers (no Shared), or whose directory cache is
// off, resolves every directory itself as before.

// lowerVariant is what, besides the lowers, a lower lookup depends on (follow,
// unicode), and what the identities the lower-only union remembers for its unions
// depend on: how they number the lowers' objects, whether they have an upper, how
// many of the lowers they committed.
type lowerVariant struct {
	follow, unicode, hasUpper bool
	numbering                 string
	committed                 int
}

// lowerUnion returns the Shared's lower-only union for unions like fs, making it on
// first use; nil when it cannot be made (its directory cache off), and fs then
// resolves everything itself.
func (s *Shared) lowerUnion(fs *FS) *FS {
	v := lowerVariant{follow: fs.redirectFollow, unicode: fs.unicodeInsensitive, hasUpper: fs.hasUpper,
		numbering: s.numbering(fs), committed: fs.committed}
	s.mu.Lock()
	u, ok := s.lowerFSs[v]
	s.mu.Unlock()
	if ok {
		return u
	}
	// Made without the lock: it opens the lowers and a fanotify group.
	opts := Options{Lowers: s.lowers, XattrPrefix: s.prefix, Logger: s.log, RedirectDir: "nofollow", Unicode: UnicodeExact}
	if v.follow {
		opts.RedirectDir = "follow"
	}
	if v.unicode {
		opts.Unicode = UnicodeInsensitive
	}
	u, err := New(opts)
	if err != nil {
		s.log.Warn("shared lower directory cache unavailable", "err", err)
		u = nil
	} else if !u.dirs.on() {
		u.Close()
		u = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if have, ok := s.lowerFSs[v]; ok || s.closed {
		if u != nil {
			u.Close()
		}
		return have
	}
	s.lowerFSs[v] = u
	return u
}

// LowerDirCacheStats sums what the lower-only unions' directory caches did (zero
// without any).
func (s *Shared) LowerDirCacheStats() DirCacheStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t DirCacheStats
	for _, u := range s.lowerFSs {
		if u == nil {
			continue
		}
		st := u.DirCacheStats()
		t.Mode = st.Mode
		t.Events, t.Purges = t.Events+st.Events, t.Purges+st.Purges
		t.DirsInvalidated, t.IdentitiesInvalidated = t.DirsInvalidated+st.DirsInvalidated, t.IdentitiesInvalidated+st.IdentitiesInvalidated
		t.Hits, t.Misses, t.IdentityHits = t.Hits+st.Hits, t.Misses+st.Misses, t.IdentityHits+st.IdentityHits
		t.Dirs, t.Identities = t.Dirs+st.Dirs, t.Identities+st.Identities
	}
	return t
}

// readEvents reads the events of the workspace's directory cache and of the lower-only
// union's, once for an operation: calls within it then pass synced, and each cache
// still sees every change completed before the operation began. It returns the
// workspace cache's generation.
func (fs *FS) readEvents() uint64 {
	gen := fs.dirs.generation()
	if fs.lower != nil {
		fs.lower.dirs.generation()
	}
	return gen
}

// childPure reports whether the child e of d, a directory, is lower-pure (see above):
// d is, e's upper part is not opaque, and no part was found through a redirect.
func (fs *FS) childPure(d *dir, e *entry) bool {
	if !d.pure || e.opaque && fs.inUpper(e) {
		return false
	}
	for i := range e.parts {
		if e.parts[i].name != "" || e.parts[i].abs != nil {
			return false
		}
	}
	return true
}

// fromLowers resolves comps in the shared lowers when it can tell the workspace sees
// exactly that there: cur, resolved at comps[:i] (nil: the root), is lower-pure and its
// upper part (if any) holds nothing at comps[i]. ok false means the caller walks on
// itself. synced: the caller has read both unions' events (readEvents).
func (fs *FS) fromLowers(cur *dir, comps []string, i int, synced bool) (d *dir, ok bool, err error) {
	if fs.lower == nil || cur != nil && !cur.pure {
		return nil, false, nil
	}
	upper := -1
	switch {
	case cur == nil && fs.hasUpper:
		upper = fs.layers[0].Root
	case cur != nil && fs.dirHasUpper(cur):
		upper = fs.upperFD(cur)
	}
	if upper >= 0 && !fs.dirs.upperAbsent(cur, comps[i]) {
		gen := fs.dirs.currentGeneration()
		if _, err := layer.Lstat(upper, comps[i]); err != unix.ENOENT {
			return nil, false, nil // there is something (or the upper cannot say): walk it
		}
		fs.dirs.putUpperAbsent(cur, comps[i], gen)
	}
	base, err := fs.lower.resolveDirIn(comps, false, synced)
	if err != nil {
		return nil, true, err
	}
	return fs.lowerView(base), true, nil
}

// freshChildView is getFresh for a directory the workspace sees through a view: the view
// of the lower-only union's directory at comps, a child of d (resolved at comps' parent),
// when the workspace sees the lowers' alone there and that union's cache holds the
// directory with its parts' attributes exact; nil otherwise. Views are not cached by the
// workspace, so without this every identification of a lower directory would look it up
// again in its parent's parts (a stat and the opaque and redirect xattrs in each). The
// workspace sees the lowers' alone at comps when d is a view itself (everything below
// one is the lowers'), or when d is lower-pure and its cache knows d's upper part holds
// nothing at the name (fromLowers' test, from the memo only: a stat here would cost what
// it saves). A path the lower cache does not hold as a directory costs a map lookup.
// The caller has read both unions' events (readEvents).
func (fs *FS) freshChildView(d *dir, comps []string) *dir {
	base := fs.freshChildBase(d, comps)
	if base == nil {
		return nil
	}
	return fs.lowerView(base)
}

// freshChildBase is the lower-only union's directory freshChildView would view (nil
// when none), for a caller that needs only the view's parts (viewParts), not a view;
// close it when done.
func (fs *FS) freshChildBase(d *dir, comps []string) *dir {
	if fs.lower == nil || !d.pure {
		return nil
	}
	if d.base == nil && fs.dirHasUpper(d) {
		holder := d
		if len(d.path) == 0 {
			holder = nil // the root, which upperAbsent names so
		}
		if !fs.dirs.upperAbsent(holder, comps[len(comps)-1]) {
			return nil
		}
	}
	return fs.lower.dirs.getFresh(comps, true)
}

// lowerIdentityPlace is where pl, a place in a view, lies in the lower-only union,
// with the generation its identity is checked against there: an identity found
// through a view is remembered by the lower-only union's directory cache, once for
// every workspace of the variant (the identity rule gives a lower object the same
// stem and ObjectID in each). ok false for a place not in a view, and for a lower
// file with several links where the index is on: its identity is the workspace's
// (its copy-up through another name).
func (fs *FS) lowerIdentityPlace(pl identityPlace) (identityPlace, uint64, bool) {
	v := pl.parent
	if v == nil {
		v = pl.self
	}
	if v == nil || v.base == nil || len(pl.parts) == 0 {
		return identityPlace{}, 0, false
	}
	if top := &pl.parts[0]; fs.indexFD >= 0 && !layer.IsDir(&top.st) && top.st.Nlink > 1 {
		return identityPlace{}, 0, false
	}
	if pl.parent == nil {
		return identityPlace{parts: v.base.parts, self: v.base}, v.lowerGen, true
	}
	shift := len(fs.layers) - len(fs.lower.layers)
	parts := slices.Clone(pl.parts)
	for i := range parts {
		parts[i].li -= shift
	}
	return identityPlace{parent: v.base, name: pl.name, parts: parts}, v.lowerGen, true
}

// lowerView is the lower-only union's directory base as a directory of fs: the same
// parts and descriptors (base's, held by the view until it is closed), each layer
// index moved below fs's upper. A view shares what it can with base (neither is ever
// changed; the capped slices copy on append).
func (fs *FS) lowerView(base *dir) *dir {
	parts := fs.viewParts(base)
	return &dir{fs: fs, path: base.path[:len(base.path):len(base.path)], parts: parts[:len(parts):len(parts)],
		owned: true, pure: true, base: base, lowerGen: fs.lower.dirs.currentGeneration()}
}

// viewParts is the parts a view of base has: base's, each layer index moved below fs's
// upper. Not to be changed.
func (fs *FS) viewParts(base *dir) []part {
	if shift := len(fs.layers) - len(base.fs.layers); shift != 0 {
		return base.shiftedBy(shift)
	}
	return base.parts
}

// shiftedParts is a directory's parts with every layer index moved by shift.
type shiftedParts struct {
	shift int
	parts []part
}

// shiftedBy returns d's parts with their layer indices moved by shift; for a cached d
// they are made once and kept with it.
func (d *dir) shiftedBy(shift int) []part {
	if sp := d.shifted.Load(); sp != nil && sp.shift == shift {
		return sp.parts
	}
	parts := slices.Clone(d.parts)
	for i := range parts {
		parts[i].li += shift
	}
	if d.cached.Load() {
		d.shifted.Store(&shiftedParts{shift: shift, parts: parts})
	}
	return parts
}

// checkLowerUnion is a consistency check of fs's lower-only union against fs's own
// layers: the same layers below its upper, by device and inode.
func (fs *FS) checkLowerUnion() error {
	u := fs.lower
	if u == nil {
		return nil
	}
	shift := len(fs.layers) - len(u.layers)
	if shift != btoi(fs.hasUpper) {
		return fmt.Errorf("billyunion: %d layers over %d shared lowers", len(fs.layers), len(u.layers))
	}
	for i, l := range u.layers {
		a, err := layer.Fstat(l.Root)
		if err != nil {
			return layer.Errno(err)
		}
		b, err := layer.Fstat(fs.layers[i+shift].Root)
		if err != nil {
			return layer.Errno(err)
		}
		if a.Dev != b.Dev || a.Ino != b.Ino {
			return fmt.Errorf("billyunion: the shared lower union's layer %d is not the union's", i)
		}
	}
	return nil
}
