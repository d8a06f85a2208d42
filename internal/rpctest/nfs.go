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

// Sattr is a sattr3 to send: nil fields are left alone, times are set to the client's
// values when given.
type Sattr struct {
	Mode, UID, GID *uint32
	Size           *uint64
	Atime, Mtime   *[2]uint32 // seconds, nanoseconds
}

// XDR encodes the sattr3.
func (s Sattr) XDR() []byte {
	var w xdr.Writer
	for _, v := range []*uint32{s.Mode, s.UID, s.GID} {
		w.Bool(v != nil)
		if v != nil {
			w.Uint32(*v)
		}
	}
	w.Bool(s.Size != nil)
	if s.Size != nil {
		w.Uint64(*s.Size)
	}
	for _, t := range []*[2]uint32{s.Atime, s.Mtime} {
		if t != nil {
			w.Uint32(2) // SET_TO_CLIENT_TIME
			w.Uint32(t[0])
			w.Uint32(t[1])
		} else {
			w.Uint32(0) // DONT_CHANGE
		}
	}
	return w.Buf
}

// SattrMode is a sattr3 setting the mode only.
func SattrMode(mode uint32) []byte { return Sattr{Mode: &mode}.XDR() }

// SattrNone is a sattr3 that sets nothing.
func SattrNone() []byte { return Sattr{}.XDR() }

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

// SetattrArgs is SETATTR3args; guard is the ctime to check, nil for none.
func SetattrArgs(fh []byte, s Sattr, guard *[2]uint32) []byte {
	var w xdr.Writer
	w.Opaque(fh)
	w.Fixed(s.XDR())
	w.Bool(guard != nil)
	if guard != nil {
		w.Uint32(guard[0])
		w.Uint32(guard[1])
	}
	return w.Buf
}

// SymlinkArgs is SYMLINK3args.
func SymlinkArgs(dir []byte, name string, sattr []byte, target string) []byte {
	var w xdr.Writer
	w.Buf = append(DirOp(dir, name), sattr...)
	w.String(target)
	return w.Buf
}

// ftype3 values (RFC 1813 section 2.5).
const (
	FtypeReg  = 1
	FtypeDir  = 2
	FtypeBlk  = 3
	FtypeChr  = 4
	FtypeLnk  = 5
	FtypeSock = 6
	FtypeFifo = 7
)

// MknodArgs is MKNOD3args: the sattr3 follows any ftype, the device numbers only a
// character or block device's.
func MknodArgs(dir []byte, name string, ftype uint32, sattr []byte, major, minor uint32) []byte {
	var w xdr.Writer
	w.Buf = DirOp(dir, name)
	w.Uint32(ftype)
	w.Fixed(sattr)
	if ftype == FtypeChr || ftype == FtypeBlk {
		w.Uint32(major)
		w.Uint32(minor)
	}
	return w.Buf
}

// RenameArgs is RENAME3args.
func RenameArgs(fromDir []byte, from string, toDir []byte, to string) []byte {
	return append(DirOp(fromDir, from), DirOp(toDir, to)...)
}

// LinkArgs is LINK3args: the file, then the new name.
func LinkArgs(fh, dir []byte, name string) []byte { return append(Opaque(fh), DirOp(dir, name)...) }

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
	st, fh := c.TryMount(dir)
	if st != 0 {
		c.t.Fatalf("MNT %s: status %d", dir, st)
	}
	return fh
}

// TryMount mounts dir and returns the mountstat3 and, when 0 (MNT3_OK), the handle.
func (c *Client) TryMount(dir string) (uint32, []byte) {
	c.t.Helper()
	r := Accepted(c.t, c.Call(mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), Opaque([]byte(dir))), oncrpc.Success)
	st := r.Uint32()
	if st != 0 {
		return st, nil
	}
	fh := r.Opaque()
	if r.Err() != nil {
		c.t.Fatal(r.Err())
	}
	return st, append([]byte(nil), fh...)
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

// ACCESS3 bits (RFC 1813 section 3.3.4).
const (
	AccessRead    = 0x01
	AccessLookup  = 0x02
	AccessModify  = 0x04
	AccessExtend  = 0x08
	AccessDelete  = 0x10
	AccessExecute = 0x20
)

// Access asks for every ACCESS bit on fh and returns those granted and the object's
// attributes (nil when the reply had none).
func (c *Client) Access(fh []byte) (uint32, *Fattr) {
	c.t.Helper()
	var w xdr.Writer
	w.Opaque(fh)
	w.Uint32(AccessRead | AccessLookup | AccessModify | AccessExtend | AccessDelete | AccessExecute)
	st, r := c.NFS(nfs3.ProcAccess, w.Buf)
	if st != nfs3.StatusOK {
		c.t.Fatalf("ACCESS: status %d", st)
	}
	a, ok := GetPostOp(r)
	granted := r.Uint32()
	if r.Err() != nil {
		c.t.Fatal(r.Err())
	}
	if !ok {
		return granted, nil
	}
	return granted, &a
}

// FSINFO properties (RFC 1813 section 3.3.19).
const (
	FSFLink        = 0x0001
	FSFSymlink     = 0x0002
	FSFHomogeneous = 0x0008
	FSFCanSetTime  = 0x0010
)

// FSInfo is a decoded FSINFO3resok.
type FSInfo struct {
	Attr                  *Fattr
	Rtmax, Rtpref, Rtmult uint32
	Wtmax, Wtpref, Wtmult uint32
	Dtpref                uint32
	MaxFileSize           uint64
	TimeDelta             [2]uint32 // seconds, nanoseconds
	Properties            uint32
}

// Fsinfo asks FSINFO of fh.
func (c *Client) Fsinfo(fh []byte) FSInfo {
	c.t.Helper()
	st, r := c.NFS(nfs3.ProcFsinfo, Opaque(fh))
	if st != nfs3.StatusOK {
		c.t.Fatalf("FSINFO: status %d", st)
	}
	var fi FSInfo
	if a, ok := GetPostOp(r); ok {
		fi.Attr = &a
	}
	fi.Rtmax, fi.Rtpref, fi.Rtmult = r.Uint32(), r.Uint32(), r.Uint32()
	fi.Wtmax, fi.Wtpref, fi.Wtmult = r.Uint32(), r.Uint32(), r.Uint32()
	fi.Dtpref = r.Uint32()
	fi.MaxFileSize = r.Uint64()
	fi.TimeDelta = [2]uint32{r.Uint32(), r.Uint32()}
	fi.Properties = r.Uint32()
	if r.Err() != nil {
		c.t.Fatalf("FSINFO reply: %v", r.Err())
	}
	return fi
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
	if n := len(reply) - start; n > int(maxcount) {
		c.t.Errorf("%d bytes of results for maxcount %d", n, maxcount)
	}
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

// ReaddirAll pages through dir from the start, maxcount bytes a page, and returns the
// entries other than "." and ".." and the number of pages. It fails the test on what a
// paging client could not cope with: an error status, a name listed twice, cookies that
// do not grow, a verifier that changes between pages, an empty page that is not the end.
// before, when set, runs before each page after the first.
func (c *Client) ReaddirAll(plus bool, dir []byte, maxcount uint32, before func(page int)) ([]DirEntry, int) {
	c.t.Helper()
	var all []DirEntry
	seen := map[string]bool{}
	cookie, verf := uint64(0), uint64(0)
	pages := 0
	for {
		if pages > 0 && before != nil {
			before(pages)
		}
		pg := c.ReaddirPage(plus, dir, cookie, verf, maxcount/8, maxcount)
		pages++
		if pg.Status != nfs3.StatusOK {
			c.t.Fatalf("page %d: status %d", pages, pg.Status)
		}
		for _, e := range pg.Entries {
			if seen[e.Name] {
				c.t.Fatalf("%s listed twice", e.Name)
			}
			seen[e.Name] = true
			if e.Cookie <= cookie {
				c.t.Fatalf("cookie %d after %d", e.Cookie, cookie)
			}
			cookie = e.Cookie
			if e.Name != "." && e.Name != ".." {
				all = append(all, e)
			}
		}
		if pages > 1 && pg.Verifier != verf {
			c.t.Fatalf("verifier changed from %x to %x while paging", verf, pg.Verifier)
		}
		verf = pg.Verifier
		if pg.EOF {
			return all, pages
		}
		if len(pg.Entries) == 0 {
			c.t.Fatal("a page without entries that is not the end")
		}
	}
}
