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
// union's listing snapshots. The cookie verifier names a snapshot, an entry's cookie is
// a hash of its name (cookies.go) and a listing goes out in cookie order, pages are
// filled to the byte limits the client gave, and entries' handles come from identities
// cached in the snapshot, so a warm listing costs encoding only.
// READDIRPLUS's dircount is taken as the hint the RFC allows, as knfsd does: Linux asks
// for dircount = maxcount/8, which would stop a page of short names at a sixth of the
// room the client gave for it.
//
// Cookies: 1 is ".", 2 is "..", and an entry's is cookieOf its name (3 or more). A client
// that continues with a verifier whose snapshot is gone (or names another directory)
// goes on in the directory's current listing after its cookie, and gets that listing's
// verifier: never BAD_COOKIE.

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
	var order *cookieOrder
	verifier := sentVerifier
	if err == nil {
		entries, verifier, err = rq.snapshot(p, cookie, sentVerifier)
	}
	if err == nil {
		order = rq.s.cookieOrders.get(verifier, entries)
	}
	// A reply is at most the READDIR size FSINFO offers, whatever the client asks: else
	// one call could make the server encode a whole huge directory into one reply.
	page := readdirPage{rq: rq, plus: plus, fh: fh, elems: elems, path: p, dirSt: dirSt,
		entries: entries, order: order, maxcount: int(min(maxcount, TransferSize))}
	if err == nil {
		err = page.fill(cookie)
	}
	if page.handleSrc != nil {
		page.handleSrc.Close()
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

// snapshot returns the listing a call reads and its verifier: the snapshot the client's
// verifier names while it is kept, else (the client starts with cookie 0, sends no
// verifier, or one whose snapshot is gone) the current listing.
func (rq *request) snapshot(p string, cookie, verifier uint64) ([]os.FileInfo, uint64, error) {
	u, logger := rq.s.union, rq.s.logger
	if cookie != 0 && verifier != 0 {
		if entries, ok := u.ListingByID(p, verifier); ok {
			return entries, verifier, nil
		}
		logger.Debug("directory snapshot gone: going on in the current listing", "path", p,
			"cookie", cookie, "verifier", verifier)
	}
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

// readdirPage encodes the entries of one reply.
type readdirPage struct {
	rq       *request
	plus     bool
	fh       []byte
	elems    []string
	path     string
	dirSt    *syscall.Stat_t
	entries  []os.FileInfo
	order    *cookieOrder // of entries
	maxcount int          // the whole reply

	body      xdr.Writer
	count     int
	eof       bool
	handleSrc *handles.Listing
}

// fill adds the entries after cookie while they fit: ".", "..", then the snapshot's
// entries in cookie order, the entries that share a cookie all in one page.
func (pg *readdirPage) fill(cookie uint64) error {
	for c := uint64(1); c < firstEntryCookie; c++ {
		if cookie < c && !pg.addDot(c) {
			return pg.full()
		}
	}
	cookies := pg.order.cookies
	for k := pg.order.after(cookie); k < len(cookies); {
		end := k + 1
		for end < len(cookies) && cookies[end] == cookies[k] {
			end++
		}
		mark, count := len(pg.body.Buf), pg.count
		for ; k < end; k++ {
			if !pg.addEntry(pg.entries[pg.order.index[k]], cookies[k]) {
				pg.body.Buf, pg.count = pg.body.Buf[:mark], count
				return pg.full()
			}
		}
	}
	pg.eof = true
	return nil
}

// full ends a page that has no room for the next entry: TOOSMALL if it holds none.
func (pg *readdirPage) full() error {
	if pg.count == 0 {
		return errTooSmall
	}
	return nil
}

// addDot encodes "." (cookie 1) or ".." (cookie 2), reporting false (and adding
// nothing) when it would not fit.
func (pg *readdirPage) addDot(c uint64) bool {
	if c == 1 {
		return pg.add(".", pg.dirSt.Ino, c, pg.dirSt, pg.fh)
	}
	st := pg.dirSt
	if len(pg.elems) > 0 {
		st = pg.rq.statOrNil(unionPath(pg.elems[:len(pg.elems)-1]))
	}
	var fileid uint64
	if st != nil {
		fileid = st.Ino
	}
	return pg.add("..", fileid, c, st, nil)
}

// addEntry encodes a snapshot entry with cookie c, reporting false (and adding nothing)
// when it would not fit.
func (pg *readdirPage) addEntry(fi os.FileInfo, c uint64) bool {
	st := statOf(fi)
	fileid := st.Ino
	var fh []byte
	if pg.plus {
		if fh = pg.entryHandle(fi); fh == nil {
			st = nil // gone since the snapshot: the client looks it up if it cares
		}
	}
	return pg.add(fi.Name(), fileid, c, st, fh)
}

// add encodes one entry (st: attributes, nil to send none; fh: nil for none), reporting
// false (and adding nothing) when it would not fit.
func (pg *readdirPage) add(name string, fileid, c uint64, st *syscall.Stat_t, fh []byte) bool {
	// Encoded in place, taken back if it does not fit: no buffer and copy per entry.
	entry := &pg.body
	mark := len(entry.Buf)
	entry.Bool(true) // an entry follows
	entry.Uint64(fileid)
	entry.String(name)
	entry.Uint64(c)
	if pg.plus {
		putPostOpAttr(entry, st, pg.rq.s.fsid)
		entry.Bool(fh != nil)
		if fh != nil {
			entry.Opaque(fh)
		}
	}
	if readdirHeadSize+len(entry.Buf)+readdirTailSize > pg.maxcount {
		entry.Buf = entry.Buf[:mark]
		return false
	}
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
