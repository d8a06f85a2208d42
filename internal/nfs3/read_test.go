package nfs3_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// pipesOpen counts this process's open pipes: the in-process server's READ pipes among
// them.
func pipesOpen(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}

// READ answers the file's bytes whether it splices them (large reads) or copies them
// (small ones, and ranges wider than a pipe), with eof and the post-op size right; a
// spliced read of a file copied up since it was opened reads the upper copy, and one of a
// file cut short in its layer answers what is left.
func TestReadSplicedAndCopied(t *testing.T) {
	size := 3<<20 + 3
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	s := rpctest.StartServer(t, rpctest.Options{Files: map[string]string{"big": string(data)}})
	c, root := s.Mounted(t)
	fh := c.Lookup(root, "big")

	read := func(off uint64, count uint32) ([]byte, bool, uint64) {
		t.Helper()
		st, res := c.NFS(nfs3.ProcRead, rpctest.ReadArgs(fh, off, count))
		if st != nfs3.StatusOK {
			t.Fatalf("READ %d at %d: status %d", count, off, st)
		}
		attr, ok := rpctest.GetPostOp(res)
		if !ok {
			t.Fatalf("READ %d at %d: no post-op attributes", count, off)
		}
		n := res.Uint32()
		eof := res.Bool()
		got := res.Opaque()
		if err := res.Err(); err != nil || int(n) != len(got) {
			t.Fatalf("READ %d at %d: count %d, %d bytes of data, %v", count, off, n, len(got), err)
		}
		return got, eof, attr.Size
	}
	pipesBefore := pipesOpen(t)
	for _, rd := range []struct {
		off   uint64
		count uint32
	}{
		{0, 1 << 20},                     // spliced, page-aligned
		{4096, 150_001},                  // spliced, padded
		{4097, 1 << 20},                  // 257 pages: copied
		{uint64(size) - 70_001, 1 << 20}, // spliced, to the end of the file
		{uint64(size) - 10, 100},         // copied, to the end
		{uint64(size), 100},              // at the end: nothing
		{100, 4096},                      // copied
	} {
		got, eof, attrSize := read(rd.off, rd.count)
		end := min(rd.off+uint64(rd.count), uint64(size))
		if !bytes.Equal(got, data[rd.off:end]) {
			t.Errorf("READ %d at %d: %d bytes differ from the file's %d", rd.count, rd.off, len(got), end-rd.off)
		}
		if eof != (end == uint64(size)) || attrSize != uint64(size) {
			t.Errorf("READ %d at %d: eof %v, size %d (file of %d)", rd.count, rd.off, eof, attrSize, size)
		}
	}
	if pipesOpen(t) <= pipesBefore {
		t.Errorf("no READ pipe was made (%d pipes open before, %d after): nothing was spliced", pipesBefore, pipesOpen(t))
	}

	// A WRITE copies the file up; the READ file cached on the lower copy follows it.
	patch := []byte("upper copy")
	if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(fh, 8192, patch, rpctest.FileSync)); st != nfs3.StatusOK {
		t.Fatalf("WRITE: status %d", st)
	}
	copy(data[8192:], patch)
	if got, _, _ := read(0, 1<<20); !bytes.Equal(got, data[:1<<20]) {
		t.Error("a spliced READ after the copy-up differs from the upper copy")
	}

	// Cut short in the upper layer behind the server's back (the same inode, so the
	// cached descriptor stays valid): reads answer what is left.
	cut := 1<<20 + 5
	if err := os.Truncate(filepath.Join(s.Layout.Upper, "big"), int64(cut)); err != nil {
		t.Fatal(err)
	}
	got, eof, attrSize := read(1<<20, 1<<20)
	if !bytes.Equal(got, data[1<<20:cut]) || !eof || attrSize != uint64(cut) {
		t.Errorf("READ past a cut: %d bytes, eof %v, size %d; want %d bytes, eof, size %d", len(got), eof, attrSize, cut-(1<<20), cut)
	}
}
