package nfs3

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Directory cookies by name hash, as ext4 and knfsd make them: an entry's cookie is a
// hash of its name (cookieOf), and a listing goes out in the order of its cookies, so a
// cookie says where to go on in any listing of the directory, not only in the snapshot
// it came from. "After cookie c" is every entry whose cookie is above c: in the client's
// own snapshot while the cache keeps it (its cookie verifier names it), and in the
// directory's current listing once it is gone (a client that paused for long, a server
// restart: the hash is the same in every run). Either way no name present throughout is
// skipped or listed twice; what changed meanwhile may or may not appear. So READDIR and
// READDIRPLUS never answer BAD_COOKIE.
//
// Entries whose names hash alike share a cookie, and a page never ends between two of
// them (fill in readdir.go), so the last cookie of a page is past all of them. A client
// that goes on from such a cookie in the middle of a page (not its last) would miss the
// others: with 63 bits of SHA-256 that takes two names of one directory colliding, about
// one chance in 10^9 for a directory of 100,000 names.

// cookieOf is the cookie of the entry named name: 63 bits of its name's SHA-256 (no sign
// bit, for clients that keep cookies in an off_t), above the cookies of "." (1) and ".."
// (2).
func cookieOf(name string) uint64 {
	sum := sha256.Sum256([]byte(name))
	c := binary.BigEndian.Uint64(sum[:8]) >> 1
	if c < firstEntryCookie {
		c += firstEntryCookie
	}
	return c
}

// cookieOrder is a snapshot's entries in cookie order.
type cookieOrder struct {
	cookies []uint64 // ascending
	index   []int32  // the snapshot entry at each position
}

// newCookieOrder orders entries by cookie, then name.
func newCookieOrder(entries []os.FileInfo) *cookieOrder {
	type pos struct {
		cookie uint64
		i      int32
	}
	ps := make([]pos, len(entries))
	for i, fi := range entries {
		ps[i] = pos{cookieOf(fi.Name()), int32(i)}
	}
	slices.SortFunc(ps, func(a, b pos) int {
		if a.cookie != b.cookie {
			if a.cookie < b.cookie {
				return -1
			}
			return 1
		}
		return strings.Compare(entries[a.i].Name(), entries[b.i].Name())
	})
	o := &cookieOrder{cookies: make([]uint64, len(ps)), index: make([]int32, len(ps))}
	for k, p := range ps {
		o.cookies[k], o.index[k] = p.cookie, p.i
	}
	return o
}

// after is the position of the first entry whose cookie is above c.
func (o *cookieOrder) after(c uint64) int {
	k, found := slices.BinarySearch(o.cookies, c)
	for found && k < len(o.cookies) && o.cookies[k] == c {
		k++
	}
	return k
}

// cookieOrders keeps the cookie orders of recent snapshots by snapshot ID (IDs are
// never reused, snapshots never change), so a client paging through a big directory
// has it hashed and sorted once, not once a page. mu is a leaf, held for map
// operations only: orders are built with it released.
type cookieOrders struct {
	mu      sync.Mutex
	lru     *simplelru.LRU[uint64, *cookieOrder]
	entries int // in the orders kept
}

// Bounds of the orders kept: as many as the union keeps snapshots by default, and at
// most maxOrderEntries entries in all (12 bytes each).
const (
	maxOrders       = 1024
	maxOrderEntries = 1 << 22
)

func newCookieOrders() *cookieOrders {
	o := &cookieOrders{}
	o.lru, _ = simplelru.NewLRU(maxOrders, func(_ uint64, v *cookieOrder) { o.entries -= len(v.cookies) })
	return o
}

// get returns the order of snapshot id, whose entries are entries, building it if it is
// not kept. id 0 (an empty listing) is never kept.
func (o *cookieOrders) get(id uint64, entries []os.FileInfo) *cookieOrder {
	if id != 0 {
		o.mu.Lock()
		ord, ok := o.lru.Get(id)
		o.mu.Unlock()
		if ok && len(ord.cookies) == len(entries) {
			return ord
		}
	}
	ord := newCookieOrder(entries)
	if id == 0 || len(entries) > maxOrderEntries {
		return ord
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.lru.Contains(id) {
		o.lru.Add(id, ord)
		o.entries += len(ord.cookies)
		for o.entries > maxOrderEntries && o.lru.Len() > 1 {
			o.lru.RemoveOldest()
		}
	}
	return ord
}
