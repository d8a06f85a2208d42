package nfs3_test

import (
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestAttributes checks the attributes the server reports from the layers' real stat:
// special mode bits, three separate times, ctime moving on chmod, the ctime guard, size
// through SETATTR, fsid, used, and that the attributes in READ and READDIRPLUS replies
// agree with GETATTR.
func TestAttributes(t *testing.T) {
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"lower.txt": "lower\n"}})
	f := c.Create(root, "f")
	d := c.Mkdir(root, "d")

	for _, tc := range []struct {
		fh   []byte
		mode uint32
	}{{f, 0o4755}, {f, 0o2711}, {d, 0o1777}, {d, 0o3755}, {f, 0o644}} {
		if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(tc.fh, rpctest.Sattr{Mode: new(tc.mode)}, nil)); st != nfs3.StatusOK {
			t.Fatalf("SETATTR mode %o: status %d", tc.mode, st)
		}
		if got := c.Getattr(tc.fh).Mode; got != tc.mode {
			t.Errorf("mode after SETATTR %o: %o", tc.mode, got)
		}
	}

	at, mt := [2]uint32{1000000000, 5}, [2]uint32{1100000000, 7}
	if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(f, rpctest.Sattr{Atime: &at, Mtime: &mt}, nil)); st != nfs3.StatusOK {
		t.Fatalf("SETATTR times: status %d", st)
	}
	a := c.Getattr(f)
	if a.Atime != at || a.Mtime != mt {
		t.Errorf("atime %v mtime %v, want %v %v", a.Atime, a.Mtime, at, mt)
	}
	if a.Ctime == a.Mtime {
		t.Errorf("ctime reported as mtime %v", a.Ctime)
	}

	time.Sleep(20 * time.Millisecond) // ctime has the kernel's coarse clock granularity
	before := a.Ctime
	if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(f, rpctest.Sattr{Mode: new(uint32(0o600))}, nil)); st != nfs3.StatusOK {
		t.Fatalf("chmod: status %d", st)
	}
	a = c.Getattr(f)
	if a.Ctime == before {
		t.Errorf("ctime unchanged by chmod: %v", a.Ctime)
	}

	// The guard is the object's ctime: mtime in its place is out of sync.
	chmod640 := rpctest.Sattr{Mode: new(uint32(0o640))}
	if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(f, chmod640, &a.Mtime)); st != nfs3.StatusNotSync {
		t.Errorf("SETATTR guarded by mtime: status %d, want %d (NOT_SYNC)", st, nfs3.StatusNotSync)
	}
	if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(f, chmod640, &a.Ctime)); st != nfs3.StatusOK {
		t.Errorf("SETATTR guarded by the current ctime: status %d", st)
	}

	// A sparse size: used counts blocks, not bytes.
	if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(f, rpctest.Sattr{Size: new(uint64(1 << 20))}, nil)); st != nfs3.StatusOK {
		t.Fatalf("SETATTR size: status %d", st)
	}
	a = c.Getattr(f)
	if a.Size != 1<<20 || a.Used >= a.Size {
		t.Errorf("after SETATTR size 1 MiB: size %d used %d (want used from blocks, below size)", a.Size, a.Used)
	}
	if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(f, 0, make([]byte, 8192), rpctest.FileSync)); st != nfs3.StatusOK {
		t.Fatalf("WRITE: status %d", st)
	}
	a = c.Getattr(f)
	if a.Used < 8192 || a.Used%512 != 0 {
		t.Errorf("used %d after writing 8 KiB", a.Used)
	}
	if a.Fsid == 0 || c.Getattr(root).Fsid != a.Fsid {
		t.Errorf("fsid %d, root's %d: want one non-zero fsid", a.Fsid, c.Getattr(root).Fsid)
	}

	// READ's reply carries the same attributes as GETATTR.
	st, r := c.NFS(nfs3.ProcRead, rpctest.ReadArgs(f, 0, 16))
	if st != nfs3.StatusOK {
		t.Fatalf("READ: status %d", st)
	}
	if got, ok := rpctest.GetPostOp(r); !ok || got != c.Getattr(f) {
		t.Errorf("READ attributes %+v differ from GETATTR's %+v", got, c.Getattr(f))
	}

	// And so does every READDIRPLUS entry.
	pg := c.ReaddirPage(true, root, 0, 0, 4096, 65536)
	if pg.Status != nfs3.StatusOK {
		t.Fatalf("READDIRPLUS: status %d", pg.Status)
	}
	seen := 0
	for _, e := range pg.Entries {
		if e.Attr == nil || e.Name == "." || e.Name == ".." {
			continue
		}
		if want := c.Getattr(c.Lookup(root, e.Name)); *e.Attr != want {
			t.Errorf("READDIRPLUS attributes of %s %+v differ from GETATTR's %+v", e.Name, *e.Attr, want)
		}
		seen++
	}
	if seen < 3 {
		t.Errorf("READDIRPLUS gave attributes of %d entries, want 3", seen)
	}
}
