package nfs3_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// inotifyOpens watches path for opens and returns a function that counts those seen so far.
func inotifyOpens(t *testing.T, path string) func() (opens, closes int) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN|unix.IN_CLOSE); err != nil {
		t.Fatal(err)
	}
	return func() (opens, closes int) {
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil || n <= 0 {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				mask := binary.NativeEndian.Uint32(buf[off+4:])
				nameLen := binary.NativeEndian.Uint32(buf[off+12:])
				if mask&unix.IN_OPEN != 0 {
					opens++
				}
				if mask&(unix.IN_CLOSE_WRITE|unix.IN_CLOSE_NOWRITE) != 0 {
					closes++
				}
				off += unix.SizeofInotifyEvent + int(nameLen)
			}
		}
	}
}

// TestReadKeepsFileOpen: 100 sequential READs of one file open it once (the open-file
// cache keeps it between calls), WRITEs likewise, and a REMOVE closes what was cached.
func TestReadKeepsFileOpen(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 100*4096/16)
	srv, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"big": string(content)}})
	fh := c.Lookup(root, "big")
	count := inotifyOpens(t, filepath.Join(srv.Layout.L1, "big"))

	var got []byte
	for i := range 100 {
		data, _ := c.Read(fh, uint64(i*4096), 4096)
		got = append(got, data...)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("read back %d bytes that differ from the file", len(got))
	}
	opens, _ := count()
	t.Logf("100 READs opened the file %d times", opens)
	if opens > 1 {
		t.Errorf("100 sequential READs opened the file %d times, want 1", opens)
	}

	// WRITEs to a new file: one open for all of them.
	f := c.Create(root, "w")
	wcount := inotifyOpens(t, filepath.Join(srv.Layout.Upper, "w"))
	for i := range 50 {
		if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(f, uint64(i*512), bytes.Repeat([]byte{byte(i)}, 512), rpctest.Unstable)); st != nfs3.StatusOK {
			t.Fatalf("WRITE %d: status %d", i, st)
		}
	}
	opens, _ = wcount()
	if opens > 1 {
		t.Errorf("50 WRITEs opened the file %d times, want 1", opens)
	}
	// REMOVE closes the cached descriptors: the inode's last close is seen.
	if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(root, "w")); st != nfs3.StatusOK {
		t.Fatalf("REMOVE: status %d", st)
	}
	if _, closes := wcount(); closes < 1 {
		t.Errorf("the removed file's cached descriptor stayed open")
	}
	if _, err := os.Stat(filepath.Join(srv.Layout.Upper, "w")); !os.IsNotExist(err) {
		t.Errorf("removed file still in the upper: %v", err)
	}
}

// TestReadAfterReplacedBehindTheServer: a file replaced in a layer behind the server's
// back (a new object at the same name) while its old descriptor is cached is read as the
// new object through the new object's handle, with the new object's attributes: the
// cached descriptor of the old one is never used for it.
func TestReadAfterReplacedBehindTheServer(t *testing.T) {
	srv, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"f": "old contents\n"}})
	old := c.Lookup(root, "f")
	if data, _ := c.Read(old, 0, 4096); string(data) != "old contents\n" {
		t.Fatalf("first read %q", data)
	}
	// Replace the lower file with a new object, as a tool working on the layer would.
	lower := filepath.Join(srv.Layout.L1, "f")
	if err := os.WriteFile(lower+".new", []byte("new and longer contents\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lower+".new", lower); err != nil {
		t.Fatal(err)
	}
	fh := c.Lookup(root, "f")
	data, eof := c.Read(fh, 0, 4096)
	if string(data) != "new and longer contents\n" || !eof {
		t.Errorf("read through the new handle: %q (eof %v), want the new contents", data, eof)
	}
	if a := c.Getattr(fh); a.Size != uint64(len("new and longer contents\n")) {
		t.Errorf("GETATTR size %d", a.Size)
	}
}
