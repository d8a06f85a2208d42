package main

import (
	"testing"
	"time"
)

// fattr is a decoded fattr3.
type fattr struct {
	ftype, mode, nlink, uid, gid uint32
	size, used, fsid, fileid     uint64
	atime, mtime, ctime          [2]uint32
}

func (r *xdrReader) fattr() fattr {
	var a fattr
	a.ftype, a.mode, a.nlink, a.uid, a.gid = r.uint32(), r.uint32(), r.uint32(), r.uint32(), r.uint32()
	a.size, a.used = r.uint64(), r.uint64()
	r.uint64() // rdev
	a.fsid, a.fileid = r.uint64(), r.uint64()
	for _, t := range []*[2]uint32{&a.atime, &a.mtime, &a.ctime} {
		t[0], t[1] = r.uint32(), r.uint32()
	}
	return a
}

func (r *xdrReader) postOp() (fattr, bool) {
	if r.uint32() == 0 {
		return fattr{}, false
	}
	return r.fattr(), true
}

func (c *rpcClient) getattr(fh []byte) fattr {
	c.t.Helper()
	st, r := c.nfsCall(procGetattr, opaqueArg(fh))
	if st != 0 {
		c.t.Fatalf("GETATTR: status %d", st)
	}
	return r.fattr()
}

// setattrArgs builds SETATTR3args; guard is the ctime to check, nil for none.
func setattrArgs(fh []byte, mode *uint32, size *uint64, atime, mtime *[2]uint32, guard *[2]uint32) []byte {
	var w xdrWriter
	w.opaque(fh)
	if mode != nil {
		w.uint32(1)
		w.uint32(*mode)
	} else {
		w.uint32(0)
	}
	w.uint32(0) // uid
	w.uint32(0) // gid
	if size != nil {
		w.uint32(1)
		w.uint64(*size)
	} else {
		w.uint32(0)
	}
	for _, t := range []*[2]uint32{atime, mtime} {
		if t != nil {
			w.uint32(setToClientTime)
			w.uint32(t[0])
			w.uint32(t[1])
		} else {
			w.uint32(dontChange)
		}
	}
	if guard != nil {
		w.uint32(1)
		w.uint32(guard[0])
		w.uint32(guard[1])
	} else {
		w.uint32(0)
	}
	return w.buf
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

// TestAttributes checks what go-nfs alone gets wrong: special mode bits, three separate
// times, ctime moving on chmod, the ctime guard, size through SETATTR, fsid, used, and that
// the attributes in go-nfs's own replies (READ, READDIRPLUS) agree with GETATTR.
func TestAttributes(t *testing.T) {
	srv := startTestServer(t, map[string]string{"lower.txt": "lower\n"})
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()
	f := c.create(root, "f")
	d := c.mkdir(root, "d")

	for _, tc := range []struct {
		fh   []byte
		mode uint32
	}{{f, 0o4755}, {f, 0o2711}, {d, 0o1777}, {d, 0o3755}, {f, 0o644}} {
		if st, _ := c.nfsCall(procSetattr, setattrArgs(tc.fh, u32(tc.mode), nil, nil, nil, nil)); st != 0 {
			t.Fatalf("SETATTR mode %o: status %d", tc.mode, st)
		}
		if got := c.getattr(tc.fh).mode; got != tc.mode {
			t.Errorf("mode after SETATTR %o: %o", tc.mode, got)
		}
	}

	at, mt := [2]uint32{1000000000, 5}, [2]uint32{1100000000, 7}
	if st, _ := c.nfsCall(procSetattr, setattrArgs(f, nil, nil, &at, &mt, nil)); st != 0 {
		t.Fatalf("SETATTR times: status %d", st)
	}
	a := c.getattr(f)
	if a.atime != at || a.mtime != mt {
		t.Errorf("atime %v mtime %v, want %v %v", a.atime, a.mtime, at, mt)
	}
	if a.ctime == a.mtime {
		t.Errorf("ctime reported as mtime %v", a.ctime)
	}

	time.Sleep(20 * time.Millisecond) // ctime has the kernel's coarse clock granularity
	before := a.ctime
	if st, _ := c.nfsCall(procSetattr, setattrArgs(f, u32(0o600), nil, nil, nil, nil)); st != 0 {
		t.Fatalf("chmod: status %d", st)
	}
	a = c.getattr(f)
	if a.ctime == before {
		t.Errorf("ctime unchanged by chmod: %v", a.ctime)
	}

	// The guard is the object's ctime: mtime in its place is out of sync.
	if st, _ := c.nfsCall(procSetattr, setattrArgs(f, u32(0o640), nil, nil, nil, &a.mtime)); st != nfsStatusNotSync {
		t.Errorf("SETATTR guarded by mtime: status %d, want %d (NOT_SYNC)", st, nfsStatusNotSync)
	}
	if st, _ := c.nfsCall(procSetattr, setattrArgs(f, u32(0o640), nil, nil, nil, &a.ctime)); st != 0 {
		t.Errorf("SETATTR guarded by the current ctime: status %d", st)
	}

	// A sparse size: used counts blocks, not bytes.
	if st, _ := c.nfsCall(procSetattr, setattrArgs(f, nil, u64(1<<20), nil, nil, nil)); st != 0 {
		t.Fatalf("SETATTR size: status %d", st)
	}
	a = c.getattr(f)
	if a.size != 1<<20 || a.used >= a.size {
		t.Errorf("after SETATTR size 1 MiB: size %d used %d (want used from blocks, below size)", a.size, a.used)
	}
	if st, _ := c.nfsCall(procWrite, writeArgs(f, 0, make([]byte, 8192), 2)); st != 0 {
		t.Fatalf("WRITE: status %d", st)
	}
	a = c.getattr(f)
	if a.used < 8192 || a.used%512 != 0 {
		t.Errorf("used %d after writing 8 KiB", a.used)
	}
	if a.fsid == 0 || c.getattr(root).fsid != a.fsid {
		t.Errorf("fsid %d, root's %d: want one non-zero fsid", a.fsid, c.getattr(root).fsid)
	}

	// go-nfs's READ reply carries the same attributes as GETATTR.
	var rd xdrWriter
	rd.opaque(f)
	rd.uint64(0)
	rd.uint32(16)
	st, r := c.nfsCall(procRead, rd.buf)
	if st != 0 {
		t.Fatalf("READ: status %d", st)
	}
	if got, ok := r.postOp(); !ok || got != c.getattr(f) {
		t.Errorf("READ attributes %+v differ from GETATTR's %+v", got, c.getattr(f))
	}

	// And so does every READDIRPLUS entry.
	var rdp xdrWriter
	rdp.opaque(root)
	rdp.uint64(0)
	rdp.fixed8()
	rdp.uint32(4096)
	rdp.uint32(65536)
	st, r = c.nfsCall(procReaddirplus, rdp.buf)
	if st != 0 {
		t.Fatalf("READDIRPLUS: status %d", st)
	}
	r.postOp()
	r.fixed(8)
	seen := 0
	for r.uint32() == 1 && r.err == nil {
		r.uint64()
		name := string(r.opaque())
		r.uint64()
		attrs, ok := r.postOp()
		if r.uint32() == 1 {
			r.opaque()
		}
		if !ok || name == "." || name == ".." {
			continue
		}
		if want := c.getattr(c.lookup(root, name)); attrs != want {
			t.Errorf("READDIRPLUS attributes of %s %+v differ from GETATTR's %+v", name, attrs, want)
		}
		seen++
	}
	if seen < 3 {
		t.Errorf("READDIRPLUS gave attributes of %d entries, want 3", seen)
	}
}

func (w *xdrWriter) fixed8() { w.buf = append(w.buf, make([]byte, 8)...) }
