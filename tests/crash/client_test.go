package crash_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// client is an NFSv3 client on one TCP connection, one call at a time. Unlike rpctest's,
// it never fails the test: a call whose connection ends before the reply returns
// errNoReply, which is how the workload learns the server was killed and which call was
// left unanswered.
type client struct {
	conn net.Conn
	xid  uint32
	cred []byte
}

// errNoReply: the call was not answered (the connection ended or timed out).
var errNoReply = errors.New("no reply")

// statusError is an NFS status other than OK.
type statusError nfs3.Status

func (e statusError) Error() string { return fmt.Sprintf("NFS status %d", uint32(e)) }

func dial(addr string, xidBase uint32) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &client{conn: conn, xid: xidBase, cred: oncrpc.AuthUnixBody("crash", 0, 0)}, nil
}

func (c *client) close() { c.conn.Close() }

// call sends one call and returns a reader positioned after accept_stat SUCCESS.
func (c *client) call(prog, vers, proc uint32, args []byte) (*xdr.Reader, error) {
	c.xid++
	var w xdr.Writer
	w.Uint32(c.xid)
	w.Uint32(oncrpc.MsgCall)
	w.Uint32(oncrpc.RPCVersion)
	w.Uint32(prog)
	w.Uint32(vers)
	w.Uint32(proc)
	w.Uint32(oncrpc.AuthUnix)
	w.Opaque(c.cred)
	w.Uint32(0)
	w.Uint32(0)
	w.Fixed(args)
	c.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := oncrpc.WriteRecord(c.conn, w.Buf); err != nil {
		return nil, errNoReply
	}
	for {
		rec, err := oncrpc.ReadRecord(c.conn)
		if err != nil {
			return nil, errNoReply
		}
		if len(rec) < 4 || binary.BigEndian.Uint32(rec) != c.xid {
			continue
		}
		r := xdr.NewReader(rec, 4)
		if r.Uint32() != oncrpc.MsgReply || r.Uint32() != oncrpc.MsgAccepted {
			return nil, fmt.Errorf("call %d denied", proc)
		}
		r.Uint32()
		r.Opaque()
		if st := r.Uint32(); st != 0 || r.Err() != nil {
			return nil, fmt.Errorf("call %d: accept_stat %d (%v)", proc, st, r.Err())
		}
		return r, nil
	}
}

// nfs calls an NFSv3 procedure; a status other than OK is a statusError, with the reader
// still returned.
func (c *client) nfs(proc nfs3.Proc, args []byte) (*xdr.Reader, error) {
	r, err := c.call(nfs3.ProgramNumber, nfs3.Version, uint32(proc), args)
	if err != nil {
		return nil, err
	}
	if st := nfs3.Status(r.Uint32()); st != nfs3.StatusOK {
		return r, statusError(st)
	}
	return r, r.Err()
}

func (c *client) mountRoot() ([]byte, error) {
	r, err := c.call(mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), rpctest.Opaque([]byte("/")))
	if err != nil {
		return nil, err
	}
	if st := r.Uint32(); st != 0 {
		return nil, fmt.Errorf("MNT: status %d", st)
	}
	fh := r.Opaque()
	return append([]byte(nil), fh...), r.Err()
}

func (c *client) lookup(dir []byte, name string) ([]byte, error) {
	r, err := c.nfs(nfs3.ProcLookup, rpctest.DirOp(dir, name))
	if err != nil {
		return nil, err
	}
	fh := append([]byte(nil), r.Opaque()...)
	return fh, r.Err()
}

// newObject reads the post_op_fh3 of a CREATE, MKDIR or SYMLINK.
func newObject(r *xdr.Reader) ([]byte, error) {
	if !r.Bool() {
		return nil, errors.New("no handle in the reply")
	}
	fh := append([]byte(nil), r.Opaque()...)
	return fh, r.Err()
}

func (c *client) create(dir []byte, name string, mode uint32) ([]byte, error) {
	r, err := c.nfs(nfs3.ProcCreate, rpctest.CreateArgs(dir, name, rpctest.CreateGuarded, rpctest.SattrMode(mode)))
	if err != nil {
		return nil, err
	}
	return newObject(r)
}

func (c *client) mkdir(dir []byte, name string, mode uint32) error {
	_, err := c.nfs(nfs3.ProcMkdir, append(rpctest.DirOp(dir, name), rpctest.SattrMode(mode)...))
	return err
}

func (c *client) symlink(dir []byte, name, target string) error {
	_, err := c.nfs(nfs3.ProcSymlink, rpctest.SymlinkArgs(dir, name, rpctest.SattrNone(), target))
	return err
}

// write returns the stability promised and the write verifier.
func (c *client) write(fh []byte, off uint64, data []byte, stable uint32) (uint32, [8]byte, error) {
	var verf [8]byte
	r, err := c.nfs(nfs3.ProcWrite, rpctest.WriteArgs(fh, off, data, stable))
	if err != nil {
		return 0, verf, err
	}
	rpctest.SkipWcc(r)
	n, committed := r.Uint32(), r.Uint32()
	copy(verf[:], r.Fixed(8))
	if r.Err() != nil {
		return 0, verf, r.Err()
	}
	if n != uint32(len(data)) {
		return 0, verf, fmt.Errorf("WRITE wrote %d of %d bytes", n, len(data))
	}
	return committed, verf, nil
}

func (c *client) commit(fh []byte) ([8]byte, error) {
	var verf [8]byte
	r, err := c.nfs(nfs3.ProcCommit, append(rpctest.Opaque(fh), make([]byte, 12)...))
	if err != nil {
		return verf, err
	}
	rpctest.SkipWcc(r)
	copy(verf[:], r.Fixed(8))
	return verf, r.Err()
}

func (c *client) setattr(fh []byte, s rpctest.Sattr) error {
	_, err := c.nfs(nfs3.ProcSetattr, rpctest.SetattrArgs(fh, s, nil))
	return err
}

func (c *client) remove(dir []byte, name string) error {
	_, err := c.nfs(nfs3.ProcRemove, rpctest.DirOp(dir, name))
	return err
}

func (c *client) rmdir(dir []byte, name string) error {
	_, err := c.nfs(nfs3.ProcRmdir, rpctest.DirOp(dir, name))
	return err
}

func (c *client) rename(fromDir []byte, from string, toDir []byte, to string) error {
	_, err := c.nfs(nfs3.ProcRename, rpctest.RenameArgs(fromDir, from, toDir, to))
	return err
}

func (c *client) link(fh, dir []byte, name string) error {
	_, err := c.nfs(nfs3.ProcLink, rpctest.LinkArgs(fh, dir, name))
	return err
}

func (c *client) readlink(fh []byte) (string, error) {
	r, err := c.nfs(nfs3.ProcReadlink, rpctest.Opaque(fh))
	if err != nil {
		return "", err
	}
	rpctest.GetPostOp(r)
	s := string(r.Opaque())
	return s, r.Err()
}

// readAll reads a whole file and returns its SHA-256 and length.
func (c *client) readAll(fh []byte) ([32]byte, int64, error) {
	h := sha256.New()
	var off uint64
	for {
		r, err := c.nfs(nfs3.ProcRead, rpctest.ReadArgs(fh, off, 1<<20))
		if err != nil {
			return [32]byte{}, 0, err
		}
		rpctest.GetPostOp(r)
		n := r.Uint32()
		eof := r.Bool()
		data := r.Opaque()
		if r.Err() != nil || uint32(len(data)) != n {
			return [32]byte{}, 0, fmt.Errorf("READ reply: %d of %d bytes (%v)", len(data), n, r.Err())
		}
		h.Write(data)
		off += uint64(n)
		if eof {
			break
		}
		if n == 0 {
			return [32]byte{}, 0, errors.New("READ: no data and no eof")
		}
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, int64(off), nil
}

// dirEntry is one READDIRPLUS entry.
type dirEntry struct {
	name   string
	fileid uint64
	attr   rpctest.Fattr
	fh     []byte
}

// readdirAll lists dir with READDIRPLUS; every entry must come with attributes and a
// handle.
func (c *client) readdirAll(dir []byte) ([]dirEntry, error) {
	var all []dirEntry
	cookie, verf := uint64(0), uint64(0)
	for pages := 0; ; pages++ {
		if pages > 10000 {
			return nil, errors.New("READDIRPLUS: no end after 10,000 pages")
		}
		var w xdr.Writer
		w.Opaque(dir)
		w.Uint64(cookie)
		w.Uint64(verf)
		w.Uint32(8192)
		w.Uint32(65536)
		r, err := c.nfs(nfs3.ProcReaddirplus, w.Buf)
		if err != nil {
			return nil, err
		}
		rpctest.GetPostOp(r)
		verf = r.Uint64()
		for r.Bool() {
			e := dirEntry{fileid: r.Uint64(), name: string(r.Opaque())}
			cookie = r.Uint64()
			a, ok := rpctest.GetPostOp(r)
			if !r.Bool() {
				ok = false
			} else {
				e.fh = append([]byte(nil), r.Opaque()...)
			}
			if e.name == "." || e.name == ".." {
				continue
			}
			if !ok {
				return nil, fmt.Errorf("READDIRPLUS: %s without attributes or handle", e.name)
			}
			e.attr = a
			all = append(all, e)
		}
		eof := r.Bool()
		if r.Err() != nil {
			return nil, r.Err()
		}
		if eof {
			return all, nil
		}
	}
}

// readBytes reads a whole file.
func (c *client) readBytes(fh []byte) ([]byte, error) {
	var out []byte
	for {
		r, err := c.nfs(nfs3.ProcRead, rpctest.ReadArgs(fh, uint64(len(out)), 1<<20))
		if err != nil {
			return nil, err
		}
		rpctest.GetPostOp(r)
		n := r.Uint32()
		eof := r.Bool()
		data := r.Opaque()
		if r.Err() != nil || uint32(len(data)) != n {
			return nil, fmt.Errorf("READ reply: %d of %d bytes (%v)", len(data), n, r.Err())
		}
		out = append(out, data...)
		if eof {
			return out, nil
		}
		if n == 0 {
			return nil, errors.New("READ: no data and no eof")
		}
	}
}
