package billyunion

import (
	"bytes"
	"os"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// checkCount fails unless the union's count is what a fresh walk of the upper finds.
func checkCount(t *testing.T, ls *layerSet, fs *FS, what string) QuotaUsage {
	t.Helper()
	u, ok := fs.Quota()
	if !ok {
		t.Fatalf("%s: no quota", what)
	}
	index := ""
	if fs.indexFD >= 0 {
		index = ls.path("w", "index")
	}
	b, n, err := scanUpper(ls.path("u", ""), index)
	if err != nil {
		t.Fatal(err)
	}
	if u.Bytes != uint64(b) || u.Inodes != uint64(n) {
		t.Fatalf("%s: counted %d bytes, %d inodes; the upper holds %d bytes, %d inodes", what, u.Bytes, u.Inodes, b, n)
	}
	return u
}

func upperSize(t *testing.T, ls *layerSet, p string) int64 {
	t.Helper()
	fi, err := os.Lstat(ls.path("u", p))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestQuotaWriteRefusedPastTheLimit(t *testing.T) {
	ls := newLayerSet(t, 1)
	fs := ls.openWith(Options{QuotaBytes: 10000})
	f, err := fs.Create("f")
	noErr(t, "create", err)
	defer f.Close()
	_, err = f.(interface {
		WriteAt([]byte, int64) (int, error)
	}).WriteAt(make([]byte, 6000), 0)
	noErr(t, "write 6000", err)
	wa := f.(interface {
		WriteAt([]byte, int64) (int, error)
	})
	n, err := wa.WriteAt(make([]byte, 5000), 6000)
	wantErrno(t, "write crossing the quota", err, syscall.EDQUOT)
	if n != 0 || upperSize(t, ls, "f") != 6000 {
		t.Fatalf("a refused write wrote: n %d, size %d", n, upperSize(t, ls, "f"))
	}
	_, err = wa.WriteAt(make([]byte, 4000), 6000)
	noErr(t, "write up to the quota", err)
	_, err = wa.WriteAt([]byte{1}, 10000)
	wantErrno(t, "a byte past the quota", err, syscall.EDQUOT)
	_, err = wa.WriteAt(bytes.Repeat([]byte{7}, 10000), 0)
	noErr(t, "overwriting within the file", err)
	_, err = wa.WriteAt(nil, 1<<20)
	noErr(t, "an empty write far past the end", err)
	_, err = f.Write([]byte("x")) // at offset 0 after Create: within
	noErr(t, "sequential write within", err)
	if _, err := f.Seek(0, 2); err != nil {
		t.Fatal(err)
	}
	_, err = f.Write([]byte("x"))
	wantErrno(t, "sequential write at the end", err, syscall.EDQUOT)
	if got := upperSize(t, ls, "f"); got != 10000 {
		t.Fatalf("size %d, want 10000", got)
	}
	if u := checkCount(t, ls, fs, "after writes"); u.Bytes != 10000 || u.Inodes != 1 {
		t.Fatalf("usage %+v", u)
	}
	// Freeing makes room again.
	noErr(t, "truncate", fs.Truncate("f", 1000))
	checkCount(t, ls, fs, "after truncate")
	_, err = wa.WriteAt(make([]byte, 9000), 1000)
	noErr(t, "write into the freed room", err)
	checkCount(t, ls, fs, "after refill")
}

func TestQuotaSetattrSizeRefused(t *testing.T) {
	ls := newLayerSet(t, 1)
	fs := ls.openWith(Options{QuotaBytes: 4096})
	f, err := fs.Create("f")
	noErr(t, "create", err)
	f.Close()
	wantErrno(t, "truncate up past the quota", fs.Truncate("f", 4097), syscall.EDQUOT)
	if got := upperSize(t, ls, "f"); got != 0 {
		t.Fatalf("a refused truncate changed the size to %d", got)
	}
	noErr(t, "truncate up to the quota", fs.Truncate("f", 4096))
	checkCount(t, ls, fs, "after truncate")
	// O_TRUNC frees what it cuts.
	f, err = fs.OpenFile("f", os.O_WRONLY|os.O_TRUNC, 0)
	noErr(t, "open O_TRUNC", err)
	f.Close()
	if u := checkCount(t, ls, fs, "after O_TRUNC"); u.Bytes != 0 {
		t.Fatalf("usage %+v after O_TRUNC", u)
	}
}

func TestQuotaCopyUpRefusedBeforeCopying(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "d/big", string(make([]byte, 8000)))
	ls.file("l1", "small", "abc")
	fs := ls.openWith(Options{QuotaBytes: 5000})
	_, err := fs.OpenFile("d/big", os.O_WRONLY, 0)
	wantErrno(t, "copy-up of a file past the quota", err, syscall.EDQUOT)
	wantErrno(t, "chmod (a copy-up)", fs.Chmod("d/big", 0o600), syscall.EDQUOT)
	if _, err := os.Lstat(ls.path("u", "d/big")); !os.IsNotExist(err) {
		t.Fatalf("the refused copy-up left an upper file: %v", err)
	}
	if w, _ := os.ReadDir(ls.path("w", "work")); len(w) != 0 {
		t.Fatalf("the refused copy-up left %d entries in the work directory", len(w))
	}
	checkCount(t, ls, fs, "after refused copy-up") // d was copied up: 1 inode
	noErr(t, "chmod of a small file", fs.Chmod("small", 0o600))
	if u := checkCount(t, ls, fs, "after copy-up"); u.Bytes != 3 {
		t.Fatalf("usage %+v", u)
	}
}

func TestQuotaInodes(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "lower", "x")
	fs := ls.openWith(Options{QuotaInodes: 3})
	noErr(t, "mkdir", fs.Mkdir("d", 0o755))
	f, err := fs.Create("d/a")
	noErr(t, "create", err)
	f.Close()
	noErr(t, "symlink", fs.Symlink("a", "d/s"))
	_, err = fs.Create("b")
	wantErrno(t, "create past the inode quota", err, syscall.EDQUOT)
	wantErrno(t, "mkdir past the inode quota", fs.Mkdir("e", 0o755), syscall.EDQUOT)
	wantErrno(t, "mknod past the inode quota", fs.Mknod("p", unix.S_IFIFO|0o644, 0, 0), syscall.EDQUOT)
	wantErrno(t, "copy-up past the inode quota", fs.Chmod("lower", 0o600), syscall.EDQUOT)
	checkCount(t, ls, fs, "at the limit")
	// A removal is never refused; its whiteout is counted.
	noErr(t, "remove a lower file", fs.Remove("lower"))
	if u := checkCount(t, ls, fs, "after whiteout"); u.Inodes != 4 {
		t.Fatalf("usage %+v", u)
	}
	noErr(t, "remove", fs.Remove("d/s"))
	noErr(t, "remove", fs.Remove("d/a"))
	checkCount(t, ls, fs, "after removals")
	f, err = fs.Create("b")
	noErr(t, "create in the freed room", err)
	f.Close()
	checkCount(t, ls, fs, "after create")
}

// TestQuotaCountFollowsChanges runs changes of every kind and checks after each that the
// count is what a walk of the upper finds.
func TestQuotaCountFollowsChanges(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "dir/one", "11111")
	ls.file("l1", "dir/two", "22")
	ls.file("l1", "keep", "kkk")
	ls.file("u", "old", "0123456789") // before start: counted by the scan
	if err := os.Link(ls.path("l1", "keep"), ls.path("l1", "keep2")); err != nil {
		t.Fatal(err)
	}
	fs := ls.openWith(Options{QuotaBytes: 1 << 20, QuotaInodes: 1000})
	checkCount(t, ls, fs, "start")
	steps := []struct {
		what string
		do   func() error
	}{
		{"write", func() error {
			f, err := fs.Create("new")
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write(make([]byte, 3000))
			return err
		}},
		{"copy-up by write", func() error {
			f, err := fs.OpenFile("dir/one", os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("more"))
			return err
		}},
		{"unlink lower (whiteout)", func() error { return fs.Remove("dir/two") }},
		{"rename upper over upper", func() error { return fs.Rename("new", "old") }},
		{"rename copied-up over nothing (whiteout left)", func() error { return fs.Rename("dir/one", "one") }},
		{"link", func() error { return fs.Link("one", "one-link") }},
		{"unlink one of two links", func() error { return fs.Remove("one") }},
		{"unlink the last link", func() error { return fs.Remove("one-link") }},
		{"create over a whiteout", func() error { return fs.Mkdir("dir/two", 0o755) }},
		{"rmdir of an opaque dir", func() error { return fs.Remove("dir/two") }},
		{"rmdir of a merged dir", func() error { return fs.Remove("dir") }},
		{"copy-up of an indexed file", func() error { return fs.Chmod("keep", 0o600) }},
		{"unlink the indexed file", func() error { return fs.Remove("keep") }},
		{"unlink its lower alias", func() error { return fs.Remove("keep2") }},
		{"mkdir and rename a dir over an empty dir", func() error {
			if err := fs.Mkdir("a", 0o755); err != nil {
				return err
			}
			if err := fs.Mkdir("b", 0o755); err != nil {
				return err
			}
			return fs.Rename("a", "b")
		}},
		{"truncate", func() error { return fs.Truncate("old", 1) }},
	}
	for _, s := range steps {
		noErr(t, s.what, s.do())
		checkCount(t, ls, fs, s.what)
	}
}

// TestQuotaConcurrentWritersNeverPass runs writers racing to fill the quota, some on one
// file, some on their own: the upper never holds more than the quota, and the count ends
// exact.
func TestQuotaConcurrentWritersNeverPass(t *testing.T) {
	const limit = 256 << 10
	ls := newLayerSet(t, 1)
	fs := ls.openWith(Options{QuotaBytes: limit})
	shared, err := fs.Create("shared")
	noErr(t, "create", err)
	defer shared.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own, err := fs.Create("own" + itoa(w))
			if err != nil {
				t.Error(err)
				return
			}
			defer own.Close()
			buf := make([]byte, 1000+w*37)
			for i := 0; i < 100; i++ {
				var err error
				if i%2 == 0 {
					_, err = shared.(interface {
						WriteAt([]byte, int64) (int, error)
					}).WriteAt(buf, int64((i*8+w)*len(buf)/2))
				} else {
					_, err = own.Write(buf)
				}
				if err == syscall.EDQUOT {
					mu.Lock()
					refused++
					mu.Unlock()
				} else if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	u := checkCount(t, ls, fs, "after the race")
	if u.Bytes > limit {
		t.Fatalf("the upper holds %d bytes, past the quota of %d", u.Bytes, limit)
	}
	if refused == 0 {
		t.Fatalf("no write was refused: the test wrote too little to reach the quota")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"1": 1, "10G": 10 << 30, "512m": 512 << 20, "4KiB": 4096, "3KB": 3072, "7B": 7, "2T": 2 << 40} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "G", "-1", "1.5G", "10X", "10iB", "9999999999P", " 1"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestQuotaNeedsAnUpper(t *testing.T) {
	ls := newLayerSet(t, 1)
	_, err := New(Options{Lowers: []string{ls.path("l1", "")}, QuotaBytes: 1})
	wantErrno(t, "a read-only union with a quota", err, syscall.EINVAL)
}
