package main

import (
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"syscall"

	billy "github.com/go-git/go-billy/v5"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/readdircache"
)

// READDIR and READDIRPLUS, answered from the union's listing snapshots. go-nfs v0.0.4
// finds a page's start by scanning the listing up to the cookie, sizes pages by a guess of
// 512 bytes per entry, and makes every entry's handle with a union lookup, so paging
// through a big directory cost the same warm as cold. Here a cookie is an index into one
// snapshot (the verifier names it), pages are filled to the byte limits the client gave,
// and entries' handles come from identities cached in the snapshot, so a warm listing
// costs encoding only. READDIRPLUS's dircount is taken as the hint RFC 1813 allows, as
// knfsd does: Linux asks for dircount = maxcount/8, which would stop a page of short names
// at a sixth of the room the client gave for it.
//
// Cookies: 1 is ".", 2 is "..", and entry i of the snapshot is i+3. A client that
// continues with a verifier whose snapshot is gone (or names another directory) gets
// BAD_COOKIE and starts over: an old cookie is never indexed into another listing.

// nfs statuses of directory reading.
const (
	nfsStatusBadCookie = 10003
	nfsStatusTooSmall  = 10005
)

// dirSource is what directory reading needs of the union.
type dirSource interface {
	ReadDir(p string) ([]os.FileInfo, error)
	ListingByID(p string, id uint64) ([]os.FileInfo, bool)
	ListingStats() readdircache.Stats
}

// listingHandles makes the handles of a listing's entries (package handles).
type listingHandles interface {
	ForListing(dir []string) (*handles.Listing, error)
}

// firstEntryCookie is the cookie of a snapshot's first entry.
const firstEntryCookie = 3

// XDR sizes of the parts of a reply.
const (
	postOpAttrSize = 4 + fattr3Size
	// readdirHeadSize: status, dir post_op_attr, cookie verifier; readdirTailSize: the
	// end of the entry list and eof.
	readdirHeadSize = 4 + postOpAttrSize + 8
	readdirTailSize = 8
)

func (p *localProc) readdir(plus bool) bool {
	fh := p.r.opaque()
	cookie := p.r.uint64()
	verf := p.r.fixed(8)
	var maxcount uint32
	if plus {
		_, maxcount = p.r.uint32(), p.r.uint32() // dircount, maxcount
	} else {
		maxcount = p.r.uint32()
	}
	if p.r.err != nil {
		return false
	}
	verifier := binary.BigEndian.Uint64(verf)
	f, elems, path, dirSt, err := p.statHandle(fh)
	if err == nil && dirSt.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		err = syscall.ENOTDIR
	}
	if err == nil && p.cred.checked() {
		if r, _, _ := p.cred.rights(dirSt); !r {
			err = syscall.EACCES
		}
	}
	var entries []os.FileInfo
	if err == nil {
		entries, verifier, err = p.snapshot(path, cookie, verifier)
	}
	var page readdirPage
	if err == nil {
		page = readdirPage{p: p, plus: plus, fh: fh, f: f, elems: elems, path: path, dirSt: dirSt,
			entries: entries, maxcount: int(maxcount)}
		err = page.fill(cookie)
	}
	p.w.uint32(nfsStatusOf(err))
	p.w.postOpAttr(dirSt, p.fsid)
	if p.fe.logger.Enabled(context.Background(), slog.LevelDebug) {
		p.fe.logger.Debug("directory page", "path", path, "cookie", cookie, "verifier_sent",
			binary.BigEndian.Uint64(verf), "verifier", verifier, "entries", page.count, "eof", page.eof, "err", err)
	}
	if err != nil {
		return true
	}
	p.w.buf = binary.BigEndian.AppendUint64(p.w.buf, verifier)
	p.w.buf = append(p.w.buf, page.body.buf...)
	p.w.uint32(0) // no more entries in this reply
	if page.eof {
		p.w.uint32(1)
	} else {
		p.w.uint32(0)
	}
	return true
}

// snapshot returns the listing a call reads and its verifier: a fresh one when the client
// starts (cookie 0) or sends no verifier, else the snapshot its verifier names.
func (p *localProc) snapshot(path string, cookie, verifier uint64) ([]os.FileInfo, uint64, error) {
	if cookie == 0 || verifier == 0 {
		entries, err := p.fe.dirs.ReadDir(path)
		if err != nil {
			return nil, 0, err
		}
		id := billyunion.ListingID(entries)
		if p.fe.logger.Enabled(context.Background(), slog.LevelDebug) {
			st := p.fe.dirs.ListingStats()
			p.fe.logger.Debug("directory listed", "path", path, "verifier", id, "entries", len(entries),
				"cached_listings", st.Cached, "hits", st.Hits, "misses", st.Misses, "stale_builds", st.Stale)
		}
		return entries, id, nil
	}
	entries, ok := p.fe.dirs.ListingByID(path, verifier)
	if !ok {
		p.fe.logger.Debug("directory snapshot gone: client starts over", "path", path, "verifier", verifier)
		return nil, 0, statusError(nfsStatusBadCookie)
	}
	return entries, verifier, nil
}

// readdirPage encodes the entries of one reply.
type readdirPage struct {
	p        *localProc
	plus     bool
	fh       []byte
	f        billy.Filesystem
	elems    []string
	path     string
	dirSt    *syscall.Stat_t
	entries  []os.FileInfo
	maxcount int // the whole reply

	body      xdrWriter
	count     int
	eof       bool
	handleSrc *handles.Listing
}

// fill adds the entries after cookie while they fit.
func (pg *readdirPage) fill(cookie uint64) error {
	start := cookie + 1 // the cookie names the last entry the client has
	if cookie == 0 {
		start = 1
	}
	last := uint64(len(pg.entries)) + firstEntryCookie - 1
	for c := start; c <= last; c++ {
		fits, err := pg.add(c)
		if err != nil {
			return err
		}
		if !fits {
			if pg.count == 0 {
				return statusError(nfsStatusTooSmall)
			}
			return nil
		}
	}
	pg.eof = true
	return nil
}

// add encodes the entry with cookie c, reporting false (and adding nothing) when it would
// not fit.
func (pg *readdirPage) add(c uint64) (bool, error) {
	var name string
	var st *syscall.Stat_t // attributes, nil to send none
	var fh []byte
	var fileid uint64
	switch c {
	case 1:
		name, st, fh = ".", pg.dirSt, pg.fh
		fileid = st.Ino
	case 2:
		name = ".."
		st = pg.dirSt
		if len(pg.elems) > 0 {
			st = pg.p.statOrNil(joinUnion(pg.f, pg.elems[:len(pg.elems)-1]))
		}
		if st != nil {
			fileid = st.Ino
		}
	default:
		fi := pg.entries[c-firstEntryCookie]
		name = fi.Name()
		st = statOf(fi)
		fileid = st.Ino
		if pg.plus {
			if fh = pg.entryHandle(fi); fh == nil {
				st = nil // gone since the snapshot: the client looks it up if it cares
			}
		}
	}
	entry := xdrWriter{buf: make([]byte, 0, 128+len(name)+len(fh))}
	entry.uint32(1) // an entry follows
	entry.uint64(fileid)
	entry.opaque([]byte(name))
	entry.uint64(c)
	if pg.plus {
		entry.postOpAttr(st, pg.p.fsid)
		if fh != nil {
			entry.uint32(1)
			entry.opaque(fh)
		} else {
			entry.uint32(0)
		}
	}
	if readdirHeadSize+len(pg.body.buf)+len(entry.buf)+readdirTailSize > pg.maxcount {
		return false, nil
	}
	pg.body.buf = append(pg.body.buf, entry.buf...)
	pg.count++
	return true, nil
}

// entryHandle returns the handle of a snapshot entry, nil when its name holds another
// object now or the handle cannot be made.
func (pg *readdirPage) entryHandle(fi os.FileInfo) []byte {
	if pg.handleSrc == nil {
		src, err := pg.p.fe.entryHandles.ForListing(pg.elems)
		if err != nil {
			return nil
		}
		pg.handleSrc = src
	}
	fh, err := pg.handleSrc.Handle(fi)
	if err != nil {
		if err != syscall.ENOENT && err != syscall.ENOTDIR {
			pg.p.fe.logger.Warn("cannot make a file handle", "dir", pg.path, "name", fi.Name(), "err", err)
		}
		return nil
	}
	return fh
}
