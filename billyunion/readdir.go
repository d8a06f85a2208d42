package billyunion

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/readdircache"
)

// visibleNames lists the names d shows: the union of its parts' names, each
// kept only if looking it up finds something (so whiteouts, names hidden by
// an opaque directory or a non-directory above, and overlay-private entries
// all drop out exactly as lookup says). Sorted.
func (fs *FS) visibleNames(d *dir) ([]string, error) {
	candidates, held, err := fs.candidateNamesIn(d)
	if err != nil {
		return nil, err
	}
	names := candidates[:0]
	for i, n := range candidates {
		e, _, err := fs.lookupChildIn(d, n, held[i])
		if err != nil {
			return nil, err
		}
		if e.exists() {
			names = append(names, n)
		}
	}
	return names, nil
}

// candidateNamesIn is the sorted, deduplicated union of the names in d's
// parts with, for each name, which parts hold it (bit i for part i; the 64th
// bit for that part and every one after), so that looking the names up need
// not stat a name in the parts that lack it.
func (fs *FS) candidateNamesIn(d *dir) ([]string, []uint64, error) {
	type held struct {
		name  string
		parts uint64
	}
	var all []held
	for i, p := range d.parts {
		names, err := layer.ReadNames(p.fd, "")
		if err != nil {
			return nil, nil, layer.Errno(err)
		}
		bit := uint64(1) << min(i, 63) // the 64th bit stands for every part from it on
		for _, n := range names {
			all = append(all, held{n, bit})
		}
	}
	slices.SortFunc(all, func(a, b held) int { return strings.Compare(a.name, b.name) })
	names := make([]string, 0, len(all))
	masks := make([]uint64, 0, len(all))
	for _, h := range all {
		if k := len(names) - 1; k >= 0 && names[k] == h.name {
			masks[k] |= h.parts
			continue
		}
		names = append(names, h.name)
		masks = append(masks, h.parts)
	}
	return names, masks, nil
}

// ReadDir lists the merged directory at p, sorted by name, with each
// entry's attributes and inode number exactly as Lstat reports them. The
// slice is the caller's to reorder; the listing comes from the directory
// cache when it is current.
func (fs *FS) ReadDir(p string) ([]os.FileInfo, error) {
	p = fs.respell(p)
	snap, err := fs.listing(p)
	if err != nil {
		return nil, err
	}
	return slices.Clone(snap.Entries), nil
}

// listing returns the current snapshot of the directory at p. It takes no
// lock: the listing is built from d's candidate names and a lookup of each,
// and when changes to d spoil the build, readdircache has the names they
// touched looked up again (Source.Lookup) rather than the whole directory,
// so a create in d never waits for a listing of d, and a listing waits for
// nothing but the end of a change in progress.
func (fs *FS) listing(p string) (*readdircache.Snapshot[os.FileInfo], error) {
	comps, err := splitPath(p)
	if err != nil {
		return nil, err
	}
	d, err := fs.resolveDir(comps, false)
	if err != nil {
		return nil, err
	}
	defer d.close()
	sig, err := freshSignature(d)
	if err != nil {
		return nil, err
	}
	if fs.sharedListings != nil && !fs.dirHasUpper(d) {
		// A lower-only directory: its merge is every workspace's (shared.go).
		snap, err := fs.listFrom(fs.sharedListings, d, sig, true)
		if err != nil || fs.indexFD < 0 || !fs.shared.hasLinked(snap) {
			return snap, err
		}
	}
	return fs.listFrom(fs.listings, d, sig, false)
}

// listFrom lists d through cache c; shared builds the workspace-independent listing
// a shared cache holds: without the index, and with no generation of this union's
// directory cache (the listing is every workspace's; see listingEntry).
func (fs *FS) listFrom(c *readdircache.Cache[os.FileInfo], d *dir, sig readdircache.Signature, shared bool) (*readdircache.Snapshot[os.FileInfo], error) {
	// What the last Names call read: which parts hold each name. The calls of one
	// List come one at a time.
	var held []uint64
	snap, err := c.List(dirKey(d), sig, readdircache.Source[os.FileInfo]{
		Names: func() ([]string, error) {
			names, masks, err := fs.candidateNamesIn(d)
			held = masks
			return names, err
		},
		Lookup: func(id uint64, name string) (os.FileInfo, bool, error) {
			return fs.listingEntry(d, id, name, allParts, shared)
		},
		ListedLookup: func(id uint64, i int, name string) (os.FileInfo, bool, error) {
			return fs.listingEntry(d, id, name, held[i], shared)
		},
		Published: func(entries []os.FileInfo) {
			if !shared {
				fs.listed(d, entries)
			}
		},
	})
	if errors.Is(err, readdircache.ErrTooManyChanges) {
		// Every build and every round of mending it met another change.
		return nil, syscall.EAGAIN
	}
	return snap, err
}

// ListingID names the snapshot a slice returned by ReadDir came from (0 for
// an empty listing): the NFS layer uses it as the cookie verifier.
func ListingID(entries []os.FileInfo) uint64 {
	if len(entries) == 0 {
		return 0
	}
	if fi, ok := entries[0].(*fileInfo); ok {
		return fi.listing
	}
	return 0
}

// ListingByID returns the recent snapshot id of the directory at p, even if
// the directory changed since, so a client paging through it sees one
// consistent listing. The slice is shared: read it, never write it (its
// capacity is capped so that an append copies). It is not copied because
// the NFS layer asks for it once per READDIR page: a copy of a 100,000-entry
// listing per 15-entry page made paging 2.7 times slower. It reports false when the snapshot is gone
// or belongs to another directory: a verifier is only a number a client
// sends back, and serving another directory's snapshot would show it the
// wrong names.
func (fs *FS) ListingByID(p string, id uint64) ([]os.FileInfo, bool) {
	p = fs.respell(p)
	s, ok := fs.listings.ByID(id)
	if !ok && fs.sharedListings != nil {
		// A union with the index on never hands out a shared snapshot holding
		// several-link files (listing): not one of its own listings.
		if s, ok = fs.sharedListings.ByID(id); ok && fs.indexFD >= 0 && fs.shared.hasLinked(s) {
			return nil, false
		}
	}
	if !ok {
		return nil, false
	}
	comps, err := splitPath(p)
	if err != nil {
		return nil, false
	}
	d, err := fs.resolveDir(comps, false)
	if err != nil {
		return nil, false
	}
	defer d.close()
	// Any part matches, not only the top one: a directory that gained an
	// upper part (copied up) while a client paged through it is still the
	// same directory, and a layer directory is part of one union directory
	// only.
	for _, part := range d.parts {
		if s.Key == (readdircache.Key{Dev: part.st.Dev, Ino: part.st.Ino}) {
			return s.Entries[:len(s.Entries):len(s.Entries)], true
		}
	}
	return nil, false
}

// ListingStats reports directory cache counters.
func (fs *FS) ListingStats() readdircache.Stats { return fs.listings.Stats() }

// dirKey names a union directory in the listing cache by its topmost part.
// Changes happen only in directories with an upper part, whose key is the
// upper directory, so readers and writers agree on it.
func dirKey(d *dir) readdircache.Key {
	return readdircache.Key{Dev: d.parts[0].st.Dev, Ino: d.parts[0].st.Ino}
}

// entryKey is the listing cache key the directory entry e would have.
func entryKey(e *entry) readdircache.Key {
	return readdircache.Key{Dev: e.top().st.Dev, Ino: e.top().st.Ino}
}

// freshSignature is signature of d's parts as they are now: a directory from the
// directory cache (the union's or, for a view, the shared lowers', lowercache.go)
// holds the stats of when it was resolved, which changes to its entries since have
// made older (dircache.go), so its parts are stat'ed again.
func freshSignature(d *dir) (readdircache.Signature, error) {
	if !d.cached.Load() && d.base == nil {
		return signature(d.parts), nil
	}
	parts := slices.Clone(d.parts)
	for i := range parts {
		st, err := layer.Fstat(parts[i].fd)
		if err != nil {
			return "", layer.Errno(err)
		}
		parts[i].st = st
	}
	return signature(parts), nil
}

// signature summarises the parts of a directory from the stats their lookup made.
func signature(parts []part) readdircache.Signature {
	b := make([]byte, 0, 48*len(parts))
	for _, p := range parts {
		for _, v := range []int64{int64(p.li), int64(p.st.Ino), p.st.Size,
			p.st.Mtim.Sec, p.st.Mtim.Nsec, p.st.Ctim.Sec, p.st.Ctim.Nsec} {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
	}
	return readdircache.Signature(b)
}

// forget drops the cached listing of the directory d after a change to an
// entry's attributes.
func (fs *FS) forget(d *dir) {
	if d != nil && len(d.parts) > 0 {
		fs.listings.Forget(dirKey(d))
	}
}

// listingEntry is the entry name shows in d, for snapshot id: looked up
// for its attributes and inode number, exactly as Lstat reports them; false
// when the name shows nothing (a whiteout, hidden, overlay-private, or
// removed since the names were read). It takes no lock. With shared set the
// entry is for a shared listing (shared.go): looked up without the index,
// and carrying no generation of this union's directory cache, but, listed
// through a view, the lower-only union's, which every workspace shares.
func (fs *FS) listingEntry(d *dir, id uint64, name string, held uint64, shared bool) (os.FileInfo, bool, error) {
	gen, ofLowers := fs.dirs.knownGeneration(), false
	if shared {
		gen = noGeneration
		if d.base != nil {
			gen, ofLowers = fs.lower.dirs.knownGeneration(), true
		}
	}
	e, refused, err := fs.lookupChildWith(d, name, held, shared)
	if err == syscall.ENOENT || refused {
		// Removed while we listed; or a directory whose redirect is not
		// followed or malformed: its lookup answers the error, the
		// listing leaves it out.
		return nil, false, nil
	}
	if err != nil || !e.exists() {
		return nil, false, err
	}
	fi := fs.newFileInfo(d, &e)
	fi.listing, fi.gen, fi.ofLowers = id, gen, ofLowers
	if gen != noGeneration {
		// Only a generation of the cache that saw the lookup vouches for them
		// (identifyListed).
		fi.parts = partRefs(e.parts)
	}
	return fi, true, nil
}

// listed runs once a listing of d that this call built is published: a pure
// upper directory none of whose entries is numbered by an origin rather than
// its own inode loses its impure mark.
func (fs *FS) listed(d *dir, entries []os.FileInfo) {
	if len(d.parts) != 1 || !fs.dirHasUpper(d) {
		return
	}
	for _, e := range entries {
		if fi, ok := e.(*fileInfo); !ok || fi.st.Ino != fi.layerIno {
			return
		}
	}
	fs.dropImpure(d)
}

// dropImpure removes the impure mark of a pure upper directory none of whose
// entries has an origin any more, as the kernel does when it lists one:
// best effort, a failure changes nothing visible.
func (fs *FS) dropImpure(d *dir) {
	has, err := layer.HasXattr(d.parts[0].fd, "", fs.x.Impure())
	if err != nil || !has {
		return
	}
	if err := layer.Removexattr(d.parts[0].fd, "", fs.x.Impure()); err != nil && fs.hasUpper {
		fs.log.Debug("dropping an unneeded impure mark", "dir", joinPath(d.path), "err", err)
	}
}
