package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// dirEntry is one entry of a READDIR or READDIRPLUS reply.
type dirEntry struct {
	name    string
	fileid  uint64
	cookie  uint64
	attrs   *fattr
	handle  []byte
	hasFH   bool
	hasAttr bool
}

type dirPage struct {
	status  uint32
	verf    uint64
	entries []dirEntry
	eof     bool
}

// readdirPage sends one READDIR (plus false) or READDIRPLUS call.
func (c *rpcClient) readdirPage(plus bool, dir []byte, cookie, verf uint64, dircount, maxcount uint32) dirPage {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.uint64(cookie)
	w.uint64(verf)
	proc := uint32(procReaddir)
	if plus {
		proc = procReaddirplus
		w.uint32(dircount)
	}
	w.uint32(maxcount)
	reply := c.call(progNFS, nfsVersion, proc, w.buf)
	if len(reply) > int(maxcount)+24 { // the RPC header is not counted
		c.t.Errorf("reply of %d bytes for maxcount %d", len(reply)-24, maxcount)
	}
	r := accepted(c.t, reply, acceptSuccess)
	pg := dirPage{status: r.uint32()}
	r.postOp()
	if pg.status != 0 {
		return pg
	}
	pg.verf = r.uint64()
	for r.uint32() == 1 && r.err == nil {
		e := dirEntry{fileid: r.uint64(), name: string(r.opaque()), cookie: r.uint64()}
		if plus {
			if a, ok := r.postOp(); ok {
				e.attrs, e.hasAttr = &a, true
			}
			if r.uint32() == 1 {
				e.handle, e.hasFH = append([]byte(nil), r.opaque()...), true
			}
		}
		pg.entries = append(pg.entries, e)
	}
	pg.eof = r.uint32() == 1
	if r.err != nil {
		c.t.Fatalf("malformed READDIR reply: %v", r.err)
	}
	return pg
}

// listAll pages through dir from the start and returns the names (without . and ..),
// failing on a name seen twice; before, when set, runs before each page after the first.
func (c *rpcClient) listAll(plus bool, dir []byte, maxcount uint32, before func(page int)) ([]dirEntry, int) {
	c.t.Helper()
	var all []dirEntry
	seen := map[string]bool{}
	cookie, verf := uint64(0), uint64(0)
	pages := 0
	for {
		if pages > 0 && before != nil {
			before(pages)
		}
		pg := c.readdirPage(plus, dir, cookie, verf, maxcount/8, maxcount)
		pages++
		if pg.status != 0 {
			c.t.Fatalf("page %d: status %d", pages, pg.status)
		}
		for _, e := range pg.entries {
			if seen[e.name] {
				c.t.Fatalf("%s listed twice", e.name)
			}
			seen[e.name] = true
			if e.cookie <= cookie {
				c.t.Fatalf("cookie %d after %d", e.cookie, cookie)
			}
			cookie = e.cookie
			if e.name != "." && e.name != ".." {
				all = append(all, e)
			}
		}
		if pages > 1 && pg.verf != verf {
			c.t.Fatalf("verifier changed from %x to %x while paging", verf, pg.verf)
		}
		verf = pg.verf
		if pg.eof {
			return all, pages
		}
		if len(pg.entries) == 0 {
			c.t.Fatal("a page without entries that is not the end")
		}
	}
}

func names(entries []dirEntry) []string {
	var n []string
	for _, e := range entries {
		n = append(n, e.name)
	}
	slices.Sort(n)
	return n
}

// TestReaddirPaging: the front end's READDIR and READDIRPLUS list a merged directory with
// whiteouts exactly once per name, fill pages to the client's limits, keep a client
// paging through its snapshot while the directory changes, give each entry the handle,
// fileid and attributes LOOKUP and GETATTR give, answer BAD_COOKIE for a snapshot that
// is gone and TOOSMALL for a page that cannot hold one entry.
func TestReaddirPaging(t *testing.T) {
	files := map[string]string{}
	for i := range 600 {
		files[fmt.Sprintf("big/l1-%04d", i)] = "x"
	}
	srv := startTestServerWith(t, func(l *layout) {
		for i := range 600 {
			p := filepath.Join(l.l2, "big", fmt.Sprintf("l2-%04d", i))
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("yy"), 0o644)
		}
	}, files)
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()
	big := c.lookup(root, "big")
	for i := range 100 { // whiteouts over both layers' names
		if st, _ := c.nfsCall(procRemove, dirop(big, fmt.Sprintf("l1-%04d", i))); st != 0 {
			t.Fatalf("REMOVE: %d", st)
		}
		if st, _ := c.nfsCall(procRemove, dirop(big, fmt.Sprintf("l2-%04d", i))); st != 0 {
			t.Fatalf("REMOVE: %d", st)
		}
	}
	for i := range 200 {
		c.create(big, fmt.Sprintf("up-%04d", i))
	}
	var want []string
	for i := 100; i < 600; i++ {
		want = append(want, fmt.Sprintf("l1-%04d", i), fmt.Sprintf("l2-%04d", i))
	}
	for i := range 200 {
		want = append(want, fmt.Sprintf("up-%04d", i))
	}
	slices.Sort(want)

	for _, plus := range []bool{false, true} {
		got, pages := c.listAll(plus, big, 4096, nil)
		if !slices.Equal(names(got), want) {
			t.Fatalf("plus=%v: listed %d names, want %d", plus, len(got), len(want))
		}
		// 1,200 entries in 4 KiB pages: READDIR entries take 32 bytes, READDIRPLUS
		// about 180; go-nfs's 512-byte guess needs 150 pages for either.
		if (!plus && pages > 12) || (plus && pages > 70) {
			t.Errorf("plus=%v: %d pages of 4 KiB for 1,200 entries: pages are not filled", plus, pages)
		}
		if plus {
			for _, e := range []dirEntry{got[0], got[len(got)/2], got[len(got)-1]} {
				fh := c.lookup(big, e.name)
				if !e.hasFH || !bytes.Equal(e.handle, fh) {
					t.Errorf("%s: READDIRPLUS handle differs from LOOKUP's", e.name)
				}
				if a := c.getattr(fh); !e.hasAttr || *e.attrs != a || e.fileid != a.fileid {
					t.Errorf("%s: READDIRPLUS attributes %+v, GETATTR %+v", e.name, e.attrs, a)
				}
			}
		}
	}

	// Changes while paging: the client keeps its snapshot; a new listing shows them.
	got, _ := c.listAll(true, big, 4096, func(page int) {
		if page == 2 {
			c.create(big, "added-while-paging")
			c.nfsCall(procRemove, dirop(big, "up-0199"))
		}
	})
	if !slices.Equal(names(got), want) {
		t.Errorf("listing during changes: %d names, want the %d of its snapshot", len(got), len(want))
	}
	got, _ = c.listAll(true, big, 8192, nil)
	if n := names(got); !slices.Contains(n, "added-while-paging") || slices.Contains(n, "up-0199") {
		t.Errorf("a listing started after the changes does not show them")
	}
	// Linux sends the verifier it holds even when it reads a directory afresh: cookie 0
	// starts a new listing whatever the verifier.
	old := c.readdirPage(true, big, 0, 0, 512, 4096)
	c.create(big, "added-after-verifier")
	fresh := c.readdirPage(true, big, 0, old.verf, 512, 4096)
	if fresh.status != 0 || fresh.verf == old.verf {
		t.Errorf("cookie 0 with an old verifier: status %d, verifier %x (old %x): the old snapshot was served", fresh.status, fresh.verf, old.verf)
	}

	// A verifier naming no snapshot: BAD_COOKIE, not another listing's names.
	first := c.readdirPage(true, big, 0, 0, 512, 4096)
	last := first.entries[len(first.entries)-1].cookie
	if pg := c.readdirPage(true, big, last, first.verf^0x5a5a, 512, 4096); pg.status != nfsStatusBadCookie {
		t.Errorf("unknown verifier: status %d, want BAD_COOKIE", pg.status)
	}
	// Another directory's verifier is refused too.
	rootPage := c.readdirPage(true, root, 0, 0, 512, 4096)
	if rootPage.verf != 0 {
		if pg := c.readdirPage(true, big, 3, rootPage.verf, 512, 4096); pg.status != nfsStatusBadCookie {
			t.Errorf("another directory's verifier: status %d, want BAD_COOKIE", pg.status)
		}
	}
	if pg := c.readdirPage(true, big, 0, 0, 10, 100); pg.status != nfsStatusTooSmall {
		t.Errorf("maxcount 100: status %d, want TOOSMALL", pg.status)
	}
	// A file is not a directory.
	if pg := c.readdirPage(false, c.lookup(big, "up-0000"), 0, 0, 0, 4096); pg.status != 20 {
		t.Errorf("READDIR of a file: status %d, want 20 (NOTDIR)", pg.status)
	}
}
