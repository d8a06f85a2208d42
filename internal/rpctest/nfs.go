package rpctest

import (
	"fmt"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Argument builders.

// Opaque is b as XDR opaque data.
func Opaque(b []byte) []byte {
	var w xdr.Writer
	w.Opaque(b)
	return w.Buf
}

// DirOp is a diropargs3.
func DirOp(dir []byte, name string) []byte { return append(Opaque(dir), Opaque([]byte(name))...) }

// SattrMode is a sattr3 setting the mode only.
func SattrMode(mode uint32) []byte {
	var w xdr.Writer
	w.Bool(true)
	w.Uint32(mode)
	for range 5 {
		w.Uint32(0)
	}
	return w.Buf
}

// SattrNone is a sattr3 that sets nothing.
func SattrNone() []byte { return make([]byte, 24) }

// createhow3 and stable_how values, as a client sends them.
const (
	CreateUnchecked = 0
	CreateGuarded   = 1
	CreateExclusive = 2

	Unstable = 0
	DataSync = 1
	FileSync = 2
)

// CreateArgs is CREATE3args; rest is what follows createhow3's mode (a sattr3 or a verifier).
func CreateArgs(dir []byte, name string, how uint32, rest []byte) []byte {
	var w xdr.Writer
	w.Buf = DirOp(dir, name)
	w.Uint32(how)
	return append(w.Buf, rest...)
}

// WriteArgs is WRITE3args.
func WriteArgs(fh []byte, off uint64, data []byte, stable uint32) []byte {
	var w xdr.Writer
	w.Opaque(fh)
	w.Uint64(off)
	w.Uint32(uint32(len(data)))
	w.Uint32(stable)
	w.Opaque(data)
	return w.Buf
}

// ReadArgs is READ3args.
func ReadArgs(fh []byte, off uint64, count uint32) []byte {
	var w xdr.Writer
	w.Opaque(fh)
	w.Uint64(off)
	w.Uint32(count)
	return w.Buf
}

// SetattrArgs is SETATTR3args; times are set to the client's values when given, guard is
// the ctime to check, nil for none.
func SetattrArgs(fh []byte, mode *uint32, size *uint64, atime, mtime *[2]uint32, guard *[2]uint32) []byte {
	var w xdr.Writer
	w.Opaque(fh)
	w.Bool(mode != nil)
	if mode != nil {
		w.Uint32(*mode)
	}
	w.Bool(false) // uid
	w.Bool(false) // gid
	w.Bool(size != nil)
	if size != nil {
		w.Uint64(*size)
	}
	for _, t := range []*[2]uint32{atime, mtime} {
		if t != nil {
			w.Uint32(2) // SET_TO_CLIENT_TIME
			w.Uint32(t[0])
			w.Uint32(t[1])
		} else {
			w.Uint32(0) // DONT_CHANGE
		}
	}
	w.Bool(guard != nil)
	if guard != nil {
		w.Uint32(guard[0])
		w.Uint32(guard[1])
	}
	return w.Buf
}

// Typed calls. Each fails the test when the reply is not what the protocol promises.

// NFS sends an NFSv3 call and returns its status and a reader after it.
func (c *Client) NFS(proc nfs3.Proc, args []byte) (nfs3.Status, *xdr.Reader) {
	c.t.Helper()
	r := Accepted(c.t, c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(proc), args), oncrpc.Success)
	st := nfs3.Status(r.Uint32())
	if r.Err() != nil {
		c.t.Fatalf("NFS procedure %d: reply without status", proc)
	}
	return st, r
}

// MountRoot mounts "/" and returns the root file handle.
func (c *Client) MountRoot() []byte { return c.Mount("/") }

// Mount mounts dir and returns its file handle.
func (c *Client) Mount(dir string) []byte {
	c.t.Helper()
	r := Accepted(c.t, c.Call(mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), Opaque([]byte(dir))), oncrpc.Success)
	if st := r.Uint32(); st != 0 {
		c.t.Fatalf("MNT %s: status %d", dir, st)
	}
	fh := r.Opaque()
	if r.Err() != nil {
		c.t.Fatal(r.Err())
	}
	return append([]byte(nil), fh...)
}

// Lookup returns the handle of name in dir.
func (c *Client) Lookup(dir []byte, name string) []byte {
	c.t.Helper()
	st, r := c.NFS(nfs3.ProcLookup, DirOp(dir, name))
	if st != nfs3.StatusOK {
		c.t.Fatalf("LOOKUP %s: status %d", name, st)
	}
	return append([]byte(nil), r.Opaque()...)
}

// Getattr returns the attributes of fh.
func (c *Client) Getattr(fh []byte) Fattr {
	c.t.Helper()
	st, r := c.NFS(nfs3.ProcGetattr, Opaque(fh))
	if st != nfs3.StatusOK {
		c.t.Fatalf("GETATTR: status %d", st)
	}
	return GetFattr(r)
}

// NewHandle reads the post_op_fh3 of a successful CREATE, MKDIR, SYMLINK or MKNOD.
func NewHandle(t testing.TB, r *xdr.Reader) []byte {
	t.Helper()
	if !r.Bool() {
		t.Fatal("no handle in the reply")
	}
	return append([]byte(nil), r.Opaque()...)
}

// Mkdir makes the directory name in dir (mode 0755) and returns its handle.
func (c *Client) Mkdir(dir []byte, name string) []byte {
	c.t.Helper()
	st, r := c.NFS(nfs3.ProcMkdir, append(DirOp(dir, name), SattrMode(0o755)...))
	if st != nfs3.StatusOK {
		c.t.Fatalf("MKDIR %s: status %d", name, st)
	}
	return NewHandle(c.t, r)
}

// Create makes the file name in dir (GUARDED, mode 0644) and returns its handle.
func (c *Client) Create(dir []byte, name string) []byte {
	c.t.Helper()
	st, r := c.NFS(nfs3.ProcCreate, CreateArgs(dir, name, CreateGuarded, SattrMode(0o644)))
	if st != nfs3.StatusOK {
		c.t.Fatalf("CREATE %s: status %d", name, st)
	}
	return NewHandle(c.t, r)
}

// Write writes data at off and returns the stability the server promised, the call's XID
// and the write verifier.
func (c *Client) Write(fh []byte, off uint64, data []byte, stable uint32) (committed, xid uint32, verf []byte) {
	c.t.Helper()
	reply := c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(nfs3.ProcWrite), WriteArgs(fh, off, data, stable))
	r := Accepted(c.t, reply, oncrpc.Success)
	if st := r.Uint32(); st != 0 {
		c.t.Fatalf("WRITE status %d", st)
	}
	SkipWcc(r)
	if n := r.Uint32(); n != uint32(len(data)) {
		c.t.Fatalf("WRITE wrote %d of %d bytes", n, len(data))
	}
	committed = r.Uint32()
	verf = append([]byte(nil), r.Fixed(8)...)
	if r.Err() != nil {
		c.t.Fatal(r.Err())
	}
	return committed, xidOf(reply), verf
}

// Commit commits the whole file and returns the call's XID and the write verifier.
func (c *Client) Commit(fh []byte) (xid uint32, verf []byte) {
	c.t.Helper()
	args := append(Opaque(fh), make([]byte, 12)...) // offset 0, count 0: the whole file
	reply := c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(nfs3.ProcCommit), args)
	r := Accepted(c.t, reply, oncrpc.Success)
	if st := r.Uint32(); st != 0 {
		c.t.Fatalf("COMMIT status %d", st)
	}
	SkipWcc(r)
	verf = append([]byte(nil), r.Fixed(8)...)
	if r.Err() != nil {
		c.t.Fatal(r.Err())
	}
	return xidOf(reply), verf
}

// Read reads up to count bytes at off and returns them and eof.
func (c *Client) Read(fh []byte, off uint64, count uint32) ([]byte, bool) {
	c.t.Helper()
	st, r := c.NFS(nfs3.ProcRead, ReadArgs(fh, off, count))
	if st != nfs3.StatusOK {
		c.t.Fatalf("READ: status %d", st)
	}
	GetPostOp(r)
	n := r.Uint32()
	eof := r.Bool()
	data := r.Opaque()
	if r.Err() != nil || uint32(len(data)) != n {
		c.t.Fatalf("READ reply: count %d, %d bytes of data (%v)", n, len(data), r.Err())
	}
	return append([]byte(nil), data...), eof
}

// Access asks for every ACCESS bit on fh and returns those granted.
func (c *Client) Access(fh []byte) uint32 {
	c.t.Helper()
	var w xdr.Writer
	w.Opaque(fh)
	w.Uint32(0x3f)
	st, r := c.NFS(nfs3.ProcAccess, w.Buf)
	if st != nfs3.StatusOK {
		c.t.Fatalf("ACCESS: status %d", st)
	}
	GetPostOp(r)
	granted := r.Uint32()
	if r.Err() != nil {
		c.t.Fatal(r.Err())
	}
	return granted
}

func xidOf(reply []byte) uint32 { return xdr.NewReader(reply, 0).Uint32() }

// DirEntry is one entry of a READDIR or READDIRPLUS page.
type DirEntry struct {
	Fileid  uint64
	Name    string
	Cookie  uint64
	Attr    *Fattr // READDIRPLUS, when sent
	Handle  []byte // READDIRPLUS, when sent
	HasAttr bool
}

// DirPage is one READDIR or READDIRPLUS reply.
type DirPage struct {
	Status   nfs3.Status
	DirAttr  *Fattr
	Verifier uint64
	Entries  []DirEntry
	EOF      bool
	Size     int // the reply's results, in bytes
}

// ReaddirPage asks for one page (READDIRPLUS when plus).
func (c *Client) ReaddirPage(plus bool, dir []byte, cookie, verf uint64, dircount, maxcount uint32) DirPage {
	c.t.Helper()
	var w xdr.Writer
	w.Opaque(dir)
	w.Uint64(cookie)
	w.Uint64(verf)
	proc := nfs3.ProcReaddir
	if plus {
		proc = nfs3.ProcReaddirplus
		w.Uint32(dircount)
	}
	w.Uint32(maxcount)
	reply := c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(proc), w.Buf)
	r := Accepted(c.t, reply, oncrpc.Success)
	start := r.Pos
	var pg DirPage
	pg.Status = nfs3.Status(r.Uint32())
	if a, ok := GetPostOp(r); ok {
		pg.DirAttr = &a
	}
	if pg.Status != nfs3.StatusOK {
		return pg
	}
	pg.Verifier = r.Uint64()
	for r.Bool() {
		e := DirEntry{Fileid: r.Uint64(), Name: string(r.Opaque()), Cookie: r.Uint64()}
		if plus {
			if a, ok := GetPostOp(r); ok {
				e.Attr, e.HasAttr = &a, true
			}
			if r.Bool() {
				e.Handle = append([]byte(nil), r.Opaque()...)
			}
		}
		pg.Entries = append(pg.Entries, e)
	}
	pg.EOF = r.Bool()
	if r.Err() != nil {
		c.t.Fatalf("READDIR reply: %v", r.Err())
	}
	pg.Size = r.Pos - start
	return pg
}

// String names an entry in failure messages.
func (e DirEntry) String() string { return fmt.Sprintf("%s(%d)", e.Name, e.Fileid) }
