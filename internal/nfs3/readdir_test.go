package nfs3_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// names are the sorted names of entries.
func names(entries []rpctest.DirEntry) []string {
	var n []string
	for _, e := range entries {
		n = append(n, e.Name)
	}
	slices.Sort(n)
	return n
}

// TestReaddirPaging: READDIR and READDIRPLUS list a merged directory with whiteouts
// exactly once per name, fill pages to the client's limits without exceeding them, keep
// a client paging through its snapshot while the directory changes, give each entry the
// handle, fileid and attributes LOOKUP and GETATTR give, go on in the current listing for
// a verifier whose snapshot is gone or is another directory's (never BAD_COOKIE, never
// another directory's names) and answer TOOSMALL for a page that cannot hold one entry.
func TestReaddirPaging(t *testing.T) {
	files := map[string]string{}
	for i := range 600 {
		files[fmt.Sprintf("big/l1-%04d", i)] = "x"
	}
	srv := rpctest.StartServer(t, rpctest.Options{Files: files, Prepare: func(l *rpctest.Layout) {
		for i := range 600 {
			p := filepath.Join(l.L2, "big", fmt.Sprintf("l2-%04d", i))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("yy"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}})
	c, root := srv.Mounted(t)
	big := c.Lookup(root, "big")
	for i := range 100 { // whiteouts over both layers' names
		if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(big, fmt.Sprintf("l1-%04d", i))); st != nfs3.StatusOK {
			t.Fatalf("REMOVE: %d", st)
		}
		if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(big, fmt.Sprintf("l2-%04d", i))); st != nfs3.StatusOK {
			t.Fatalf("REMOVE: %d", st)
		}
	}
	for i := range 200 {
		c.Create(big, fmt.Sprintf("up-%04d", i))
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
		got, pages := c.ReaddirAll(plus, big, 4096, nil)
		if !slices.Equal(names(got), want) {
			t.Fatalf("plus=%v: listed %d names, want %d", plus, len(got), len(want))
		}
		// 1,200 entries in 4 KiB pages: READDIR entries take 32 bytes, READDIRPLUS
		// about 180, so filled pages need about 10 and 55; a server that assumed a
		// fixed size per entry (512 bytes) would need 150 for either.
		if (!plus && pages > 12) || (plus && pages > 70) {
			t.Errorf("plus=%v: %d pages of 4 KiB for 1,200 entries: pages are not filled", plus, pages)
		}
		if plus {
			for _, e := range []rpctest.DirEntry{got[0], got[len(got)/2], got[len(got)-1]} {
				fh := c.Lookup(big, e.Name)
				if e.Handle == nil || !bytes.Equal(e.Handle, fh) {
					t.Errorf("%s: READDIRPLUS handle differs from LOOKUP's", e.Name)
				}
				if a := c.Getattr(fh); e.Attr == nil || *e.Attr != a || e.Fileid != a.Fileid {
					t.Errorf("%s: READDIRPLUS attributes %+v, GETATTR %+v", e.Name, e.Attr, a)
				}
			}
		}
	}

	// Changes while paging: the client keeps its snapshot; a new listing shows them.
	got, _ := c.ReaddirAll(true, big, 4096, func(page int) {
		if page == 2 {
			c.Create(big, "added-while-paging")
			if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(big, "up-0199")); st != nfs3.StatusOK {
				t.Errorf("REMOVE while paging: status %d", st)
			}
		}
	})
	if !slices.Equal(names(got), want) {
		t.Errorf("listing during changes: %d names, want the %d of its snapshot", len(got), len(want))
	}
	got, _ = c.ReaddirAll(true, big, 8192, nil)
	if n := names(got); !slices.Contains(n, "added-while-paging") || slices.Contains(n, "up-0199") {
		t.Errorf("a listing started after the changes does not show them")
	}
	// Linux sends the verifier it holds even when it reads a directory afresh: cookie 0
	// starts a new listing whatever the verifier.
	old := c.ReaddirPage(true, big, 0, 0, 512, 4096)
	c.Create(big, "added-after-verifier")
	fresh := c.ReaddirPage(true, big, 0, old.Verifier, 512, 4096)
	if fresh.Status != nfs3.StatusOK || fresh.Verifier == old.Verifier {
		t.Errorf("cookie 0 with an old verifier: status %d, verifier %x (old %x): the old snapshot was served", fresh.Status, fresh.Verifier, old.Verifier)
	}

	// A verifier naming no snapshot: the page goes on after the cookie in the current
	// listing, with its verifier.
	first := c.ReaddirPage(true, big, 0, 0, 512, 4096)
	last := first.Entries[len(first.Entries)-1].Cookie
	current := c.ReaddirPage(true, big, last, first.Verifier, 512, 4096)
	if pg := c.ReaddirPage(true, big, last, first.Verifier^0x5a5a, 512, 4096); pg.Status != nfs3.StatusOK ||
		pg.Verifier != current.Verifier || len(pg.Entries) == 0 || pg.Entries[0].Name != current.Entries[0].Name ||
		pg.Entries[0].Cookie <= last {
		t.Errorf("unknown verifier: status %d, verifier %x, want the page after cookie %x of the current listing (verifier %x)",
			pg.Status, pg.Verifier, last, current.Verifier)
	}
	// Another directory's verifier: this directory's names, not the other's.
	rootPage := c.ReaddirPage(true, root, 0, 0, 512, 4096)
	if rootPage.Verifier != 0 {
		pg := c.ReaddirPage(true, big, 3, rootPage.Verifier, 512, 4096)
		if pg.Status != nfs3.StatusOK || pg.Verifier == rootPage.Verifier || len(pg.Entries) == 0 {
			t.Errorf("another directory's verifier: status %d, verifier %x (the other's %x)", pg.Status, pg.Verifier, rootPage.Verifier)
		}
		for _, e := range pg.Entries {
			if !slices.Contains(want, e.Name) && e.Name != "added-while-paging" && e.Name != "added-after-verifier" {
				t.Errorf("another directory's verifier: listed %s, not in this directory", e.Name)
			}
		}
	}
	if pg := c.ReaddirPage(true, big, 0, 0, 10, 100); pg.Status != nfs3.StatusTooSmall {
		t.Errorf("maxcount 100: status %d, want TOOSMALL", pg.Status)
	}
	// A file is not a directory.
	if pg := c.ReaddirPage(false, c.Lookup(big, "up-0000"), 0, 0, 0, 4096); pg.Status != nfs3.StatusNotDir {
		t.Errorf("READDIR of a file: status %d, want 20 (NOTDIR)", pg.Status)
	}
}
