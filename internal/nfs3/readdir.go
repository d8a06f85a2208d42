package nfs3

import (
	"context"
	"log/slog"
	"os"
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// READDIR and READDIRPLUS (RFC 1813 sections 3.3.16 and 3.3.17), answered from the
// union's listing snapshots. A cookie is an index into one snapshot (the cookie verifier
// names it), pages are filled to the byte limits the client gave, and entries' handles
// come from identities cached in the snapshot, so a warm listing costs encoding only.
// READDIRPLUS's dircount is taken as the hint the RFC allows, as knfsd does: Linux asks
// for dircount = maxcount/8, which would stop a page of short names at a sixth of the
// room the client gave for it.
//
// Cookies: 1 is ".", 2 is "..", and entry i of the snapshot is i+3. A client that
// continues with a verifier whose snapshot is gone (or names another directory) gets
// BAD_COOKIE and starts over: an old cookie is never indexed into another listing.

// readdir answers READDIR.
func readdir(rq *request) error { return rq.readDirectory(false) }

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

func (rq *request) readDirectory(plus bool) error {
	fh := rq.handle()
	cookie := rq.args.Uint64()
	sentVerifier := rq.args.Uint64()
	var maxcount uint32
	if plus {
		_, maxcount = rq.args.Uint32(), rq.args.Uint32() // dircount, maxcount
	} else {
		maxcount = rq.args.Uint32()
	}
	if err := rq.decoded(); err != nil {
		return err
	}
	elems, p, dirSt, err := rq.statHandle(fh)
	if err == nil && !isDir(dirSt) {
		err = syscall.ENOTDIR
	}
	if err == nil && rq.who.checked() {
		if r, _, _ := rq.who.rights(dirSt); !r {
			err = syscall.EACCES
		}
	}
	var entries []os.FileInfo
	verifier := sentVerifier
	if err == nil {
		entries, verifier, err = rq.snapshot(p, cookie, sentVerifier)
	}
	// A reply is at most the READDIR size FSINFO offers, whatever the client asks: else
	// one call could make the server encode a whole huge directory into one reply.
	page := readdirPage{rq: rq, plus: plus, fh: fh, elems: elems, path: p, dirSt: dirSt,
		entries: entries, maxcount: int(min(maxcount, TransferSize))}
	if err == nil {
		err = page.fill(cookie)
	}
	rq.status(err)
	rq.postOpAttr(dirSt)
	if rq.s.logger.Enabled(context.Background(), slog.LevelDebug) {
		rq.s.logger.Debug("directory page", "path", p, "cookie", cookie, "verifier_sent", sentVerifier,
			"verifier", verifier, "entries", page.count, "eof", page.eof, "err", err)
	}
	if err != nil {
		return nil
	}
	rq.res.Uint64(verifier)
	rq.res.Fixed(page.body.Buf)
	rq.res.Bool(false) // no more entries in this reply
	rq.res.Bool(page.eof)
	return nil
}

// snapshot returns the listing a call reads and its verifier: a fresh one when the client
// starts (cookie 0) or sends no verifier, else the snapshot its verifier names.
func (rq *request) snapshot(p string, cookie, verifier uint64) ([]os.FileInfo, uint64, error) {
	u, logger := rq.s.union, rq.s.logger
	if cookie == 0 || verifier == 0 {
		entries, err := u.ReadDir(p)
		if err != nil {
			return nil, 0, err
		}
		id := billyunion.ListingID(entries)
		if logger.Enabled(context.Background(), slog.LevelDebug) {
			st := u.ListingStats()
			logger.Debug("directory listed", "path", p, "verifier", id, "entries", len(entries),
				"cached_listings", st.Cached, "hits", st.Hits, "misses", st.Misses, "stale_builds", st.Stale)
		}
		return entries, id, nil
	}
	entries, ok := u.ListingByID(p, verifier)
	if !ok {
		logger.Debug("directory snapshot gone: client starts over", "path", p, "verifier", verifier)
		return nil, 0, errBadCookie
	}
	return entries, verifier, nil
}

// readdirPage encodes the entries of one reply.
type readdirPage struct {
	rq       *request
	plus     bool
	fh       []byte
	elems    []string
	path     string
	dirSt    *syscall.Stat_t
	entries  []os.FileInfo
	maxcount int // the whole reply

	body      xdr.Writer
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
		if !pg.add(c) {
			if pg.count == 0 {
				return errTooSmall
			}
			return nil
		}
	}
	pg.eof = true
	return nil
}

// add encodes the entry with cookie c, reporting false (and adding nothing) when it would
// not fit.
func (pg *readdirPage) add(c uint64) bool {
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
			st = pg.rq.statOrNil(unionPath(pg.elems[:len(pg.elems)-1]))
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
	entry := xdr.Writer{Buf: make([]byte, 0, 128+len(name)+len(fh))}
	entry.Bool(true) // an entry follows
	entry.Uint64(fileid)
	entry.String(name)
	entry.Uint64(c)
	if pg.plus {
		putPostOpAttr(&entry, st, pg.rq.s.fsid)
		entry.Bool(fh != nil)
		if fh != nil {
			entry.Opaque(fh)
		}
	}
	if readdirHeadSize+len(pg.body.Buf)+len(entry.Buf)+readdirTailSize > pg.maxcount {
		return false
	}
	pg.body.Buf = append(pg.body.Buf, entry.Buf...)
	pg.count++
	return true
}

// entryHandle returns the handle of a snapshot entry, nil when its name holds another
// object now or the handle cannot be made.
func (pg *readdirPage) entryHandle(fi os.FileInfo) []byte {
	if pg.handleSrc == nil {
		src, err := pg.rq.s.handles.ForListing(pg.elems)
		if err != nil {
			return nil
		}
		pg.handleSrc = src
	}
	fh, err := pg.handleSrc.Handle(fi)
	if err != nil {
		if err != syscall.ENOENT && err != syscall.ENOTDIR {
			pg.rq.s.logger.Warn("cannot make a file handle", "dir", pg.path, "name", fi.Name(), "err", err)
		}
		return nil
	}
	return fh
}
