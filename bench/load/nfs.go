package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// The NFS side: one TCP connection per client, opened and mounted by go-nfs-client
// (rpc.DialTCP, Mount.Mount), and the NFSv3 procedures called through its RPC client
// (rpc.Client.Call) with arguments encoded by its XDR encoder. The replies are decoded
// here rather than by the library's Target methods, so that every call returns its NFS
// status, its post-operation attributes and (for WRITE) the stable level and verifier:
// what the load run checks.

// NFSv3 procedure numbers (RFC 1813).
const (
	procGetattr     = 1
	procSetattr     = 2
	procLookup      = 3
	procReadlink    = 5
	procRead        = 6
	procWrite       = 7
	procCreate      = 8
	procMkdir       = 9
	procSymlink     = 10
	procRemove      = 12
	procRmdir       = 13
	procRename      = 14
	procReaddirplus = 17
	procCommit      = 21
	numProcs        = 22
)

var procNames = map[uint32]string{
	procGetattr: "GETATTR", procSetattr: "SETATTR", procLookup: "LOOKUP", procReadlink: "READLINK",
	procRead: "READ", procWrite: "WRITE", procCreate: "CREATE", procMkdir: "MKDIR",
	procSymlink: "SYMLINK", procRemove: "REMOVE", procRmdir: "RMDIR", procRename: "RENAME",
	procReaddirplus: "READDIRPLUS", procCommit: "COMMIT",
}

// Status values the run expects in some calls.
const (
	nfsOK        = 0
	nfsNoEnt     = 2
	nfsExist     = 17
	nfsNotEmpty  = 66
	nfsStale     = 70
	nfsBadCookie = 10003
)

var statusNames = map[uint32]string{
	0: "NFS3_OK", 1: "NFS3ERR_PERM", 2: "NFS3ERR_NOENT", 5: "NFS3ERR_IO", 6: "NFS3ERR_NXIO",
	13: "NFS3ERR_ACCES", 17: "NFS3ERR_EXIST", 18: "NFS3ERR_XDEV", 19: "NFS3ERR_NODEV",
	20: "NFS3ERR_NOTDIR", 21: "NFS3ERR_ISDIR", 22: "NFS3ERR_INVAL", 27: "NFS3ERR_FBIG",
	28: "NFS3ERR_NOSPC", 30: "NFS3ERR_ROFS", 31: "NFS3ERR_MLINK", 63: "NFS3ERR_NAMETOOLONG",
	66: "NFS3ERR_NOTEMPTY", 69: "NFS3ERR_DQUOT", 70: "NFS3ERR_STALE", 71: "NFS3ERR_REMOTE",
	10001: "NFS3ERR_BADHANDLE", 10002: "NFS3ERR_NOT_SYNC", 10003: "NFS3ERR_BAD_COOKIE",
	10004: "NFS3ERR_NOTSUPP", 10005: "NFS3ERR_TOOSMALL", 10006: "NFS3ERR_SERVERFAULT",
	10007: "NFS3ERR_BADTYPE", 10008: "NFS3ERR_JUKEBOX",
}

func statusName(s uint32) string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status %d", s)
}

// statusError is an NFS status other than the one expected.
type statusError struct {
	proc   uint32
	status uint32
}

func (e *statusError) Error() string {
	return procNames[e.proc] + ": " + statusName(e.status)
}

// fattr is fattr3.
type fattr struct {
	Type, Mode, Nlink, UID, GID uint32
	Size, Used                  uint64
	Rdev                        [2]uint32
	FSID, FileID                uint64
	Atime, Mtime, Ctime         [2]uint32
}

const (
	typeReg = 1
	typeDir = 2
	typeLnk = 5
)

// conn is one client connection: its own TCP connection, mounted once.
type conn struct {
	rpc  *rpc.Client
	mnt  *nfsc.Mount
	auth rpc.Auth
	root []byte
	lat  *latencies
	// listVerf is the cookie verifier the first page of the last READDIRPLUS listing
	// answered (for diagnosing BAD_COOKIE)
	listVerf [8]byte
}

// dial opens a connection to addr (NFS and MOUNT on one port, as ovlnfs serves them),
// mounts "/" and looks up the root's handle.
func dial(addr string, lat *latencies) (*conn, error) {
	// The library binds a random local port of 49152-65535 and gives up if it is taken
	// (it retries only privileged ports): try again with another.
	var client *rpc.Client
	var err error
	for try := 0; ; try++ {
		client, err = rpc.DialTCP("tcp", addr, false)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	auth := rpc.NewAuthUnix("ovlnfs-load", 0, 0).Auth()
	m := &nfsc.Mount{Client: client}
	if _, err := m.Mount("/", auth); err != nil { // MNT, then FSINFO through the library
		client.Close()
		return nil, fmt.Errorf("mount: %w", err)
	}
	c := &conn{rpc: client, mnt: m, auth: auth, lat: lat}
	// The library keeps MNT's root handle inside its Target (unexported): one more MNT
	// call through the same connection returns it.
	if err := c.fetchRoot(); err != nil {
		client.Close()
		return nil, err
	}
	return c, nil
}

func (c *conn) fetchRoot() error {
	type mntArgs struct {
		rpc.Header
		Dirpath string
	}
	res, err := c.rpc.Call(&mntArgs{rpc.Header{Rpcvers: 2, Prog: nfsc.MountProg, Vers: nfsc.MountVers,
		Proc: nfsc.MountProc3MNT, Cred: c.auth, Verf: rpc.AuthNull}, "/"})
	if err != nil {
		return fmt.Errorf("mnt: %w", err)
	}
	d := decoder{r: res}
	if st := d.u32(); st != 0 {
		return fmt.Errorf("mnt: status %d", st)
	}
	c.root = d.opaque()
	return d.err
}

func (c *conn) close() {
	_ = c.mnt.Unmount()
	c.rpc.Close()
}

func (c *conn) header(proc uint32) rpc.Header {
	return rpc.Header{Rpcvers: 2, Prog: nfsc.Nfs3Prog, Vers: nfsc.Nfs3Vers, Proc: proc, Cred: c.auth, Verf: rpc.AuthNull}
}

// call sends one NFS call and returns the decoder positioned after the status.
func (c *conn) call(proc uint32, args any) (*decoder, uint32, error) {
	start := time.Now()
	res, err := c.rpc.Call(args)
	c.lat.add(proc, time.Since(start))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: rpc: %w", procNames[proc], err)
	}
	d := &decoder{r: res}
	st := d.u32()
	if d.err != nil {
		return nil, 0, fmt.Errorf("%s: short reply: %w", procNames[proc], d.err)
	}
	return d, st, nil
}

// expect turns an unexpected status into an error.
func expect(proc, st uint32, want uint32) error {
	if st != want {
		return &statusError{proc: proc, status: st}
	}
	return nil
}

type fhArgs struct {
	rpc.Header
	FH []byte
}

type dirOpArgs struct {
	rpc.Header
	Dir  []byte
	Name string
}

func (c *conn) getattr(fh []byte) (fattr, uint32, error) {
	d, st, err := c.call(procGetattr, &fhArgs{c.header(procGetattr), fh})
	if err != nil || st != nfsOK {
		return fattr{}, st, err
	}
	a := d.fattr()
	return a, st, d.err
}

// lookup returns the handle and attributes of name in dir; st is the NFS status.
func (c *conn) lookup(dir []byte, name string) ([]byte, fattr, uint32, error) {
	d, st, err := c.call(procLookup, &dirOpArgs{c.header(procLookup), dir, name})
	if err != nil || st != nfsOK {
		return nil, fattr{}, st, err
	}
	fh := d.opaque()
	a, ok := d.postOpAttr()
	d.postOpAttr()
	if d.err == nil && !ok {
		return nil, fattr{}, st, errors.New("LOOKUP: no object attributes")
	}
	return fh, a, st, d.err
}

type readArgs struct {
	rpc.Header
	FH    []byte
	Off   uint64
	Count uint32
}

// read returns up to count bytes at off, and the EOF flag and post-op attributes.
func (c *conn) read(fh []byte, off uint64, count uint32) ([]byte, bool, fattr, uint32, error) {
	d, st, err := c.call(procRead, &readArgs{c.header(procRead), fh, off, count})
	if err != nil || st != nfsOK {
		return nil, false, fattr{}, st, err
	}
	a, _ := d.postOpAttr()
	n := d.u32()
	eof := d.bool()
	data := d.opaque()
	if d.err == nil && int(n) != len(data) {
		return nil, false, a, st, fmt.Errorf("READ: count %d but %d bytes of data", n, len(data))
	}
	return data, eof, a, st, d.err
}

type writeArgs struct {
	rpc.Header
	FH     []byte
	Off    uint64
	Count  uint32
	Stable uint32
	Data   []byte
}

const (
	unstable = 0
	dataSync = 1
	fileSync = 2
)

// write returns the count written, the stable level committed and the verifier.
func (c *conn) write(fh []byte, off uint64, data []byte, stable uint32) (uint32, uint32, [8]byte, fattr, uint32, error) {
	var verf [8]byte
	d, st, err := c.call(procWrite, &writeArgs{c.header(procWrite), fh, off, uint32(len(data)), stable, data})
	if err != nil || st != nfsOK {
		return 0, 0, verf, fattr{}, st, err
	}
	a, _ := d.wcc()
	n := d.u32()
	committed := d.u32()
	d.fixed(verf[:])
	return n, committed, verf, a, st, d.err
}

type commitArgs struct {
	rpc.Header
	FH    []byte
	Off   uint64
	Count uint32
}

func (c *conn) commit(fh []byte) ([8]byte, uint32, error) {
	var verf [8]byte
	d, st, err := c.call(procCommit, &commitArgs{c.header(procCommit), fh, 0, 0})
	if err != nil || st != nfsOK {
		return verf, st, err
	}
	d.wcc()
	d.fixed(verf[:])
	return verf, st, d.err
}

type createArgs struct {
	rpc.Header
	Dir  []byte
	Name string
	How  uint32 // UNCHECKED 0, GUARDED 1 (EXCLUSIVE is not used)
	Attr nfsc.Sattr3
}

const (
	createUnchecked = 0
	createGuarded   = 1
)

func modeAttr(mode uint32) nfsc.Sattr3 {
	return nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: mode}}
}

// newObject decodes post_op_fh3, post_op_attr and the directory's wcc_data.
func newObject(proc uint32, d *decoder) ([]byte, fattr, error) {
	fh, okFH := d.postOpFH()
	a, okA := d.postOpAttr()
	d.wcc()
	if d.err != nil {
		return nil, fattr{}, d.err
	}
	if !okFH || !okA {
		return nil, fattr{}, fmt.Errorf("%s: no handle or attributes for the new object", procNames[proc])
	}
	return fh, a, nil
}

func (c *conn) create(dir []byte, name string, how, mode uint32) ([]byte, fattr, uint32, error) {
	d, st, err := c.call(procCreate, &createArgs{c.header(procCreate), dir, name, how, modeAttr(mode)})
	if err != nil || st != nfsOK {
		return nil, fattr{}, st, err
	}
	fh, a, err := newObject(procCreate, d)
	return fh, a, st, err
}

type mkdirArgs struct {
	rpc.Header
	Dir  []byte
	Name string
	Attr nfsc.Sattr3
}

func (c *conn) mkdir(dir []byte, name string, mode uint32) ([]byte, fattr, uint32, error) {
	d, st, err := c.call(procMkdir, &mkdirArgs{c.header(procMkdir), dir, name, modeAttr(mode)})
	if err != nil || st != nfsOK {
		return nil, fattr{}, st, err
	}
	fh, a, err := newObject(procMkdir, d)
	return fh, a, st, err
}

type symlinkArgs struct {
	rpc.Header
	Dir    []byte
	Name   string
	Attr   nfsc.Sattr3
	Target string
}

func (c *conn) symlink(dir []byte, name, target string) ([]byte, fattr, uint32, error) {
	d, st, err := c.call(procSymlink, &symlinkArgs{c.header(procSymlink), dir, name, nfsc.Sattr3{}, target})
	if err != nil || st != nfsOK {
		return nil, fattr{}, st, err
	}
	fh, a, err := newObject(procSymlink, d)
	return fh, a, st, err
}

func (c *conn) readlink(fh []byte) (string, uint32, error) {
	d, st, err := c.call(procReadlink, &fhArgs{c.header(procReadlink), fh})
	if err != nil || st != nfsOK {
		return "", st, err
	}
	d.postOpAttr()
	s := d.opaque()
	return string(s), st, d.err
}

func (c *conn) remove(dir []byte, name string) (uint32, error) {
	_, st, err := c.call(procRemove, &dirOpArgs{c.header(procRemove), dir, name})
	return st, err
}

func (c *conn) rmdir(dir []byte, name string) (uint32, error) {
	_, st, err := c.call(procRmdir, &dirOpArgs{c.header(procRmdir), dir, name})
	return st, err
}

type renameArgs struct {
	rpc.Header
	FromDir []byte
	From    string
	ToDir   []byte
	To      string
}

func (c *conn) rename(fromDir []byte, from string, toDir []byte, to string) (uint32, error) {
	_, st, err := c.call(procRename, &renameArgs{c.header(procRename), fromDir, from, toDir, to})
	return st, err
}

type setattrArgs struct {
	rpc.Header
	FH    []byte
	Attr  nfsc.Sattr3
	Guard bool // sattrguard3 without a ctime check
}

func (c *conn) setattr(fh []byte, s nfsc.Sattr3) (fattr, uint32, error) {
	d, st, err := c.call(procSetattr, &setattrArgs{c.header(procSetattr), fh, s, false})
	if err != nil || st != nfsOK {
		return fattr{}, st, err
	}
	a, ok := d.wcc()
	if d.err == nil && !ok {
		return a, st, errors.New("SETATTR: no post-operation attributes")
	}
	return a, st, d.err
}

type readdirplusArgs struct {
	rpc.Header
	FH       []byte
	Cookie   uint64
	Verf     [8]byte
	DirCount uint32
	MaxCount uint32
}

// dirEntry is an entryplus3.
type dirEntry struct {
	FileID uint64
	Name   string
	Cookie uint64
	Attr   fattr
	HasAtt bool
	FH     []byte
}

// readdirplus lists the whole directory, paging with the cookies; pages is the number
// of calls it took.
func (c *conn) readdirplus(dir []byte, maxCount uint32) ([]dirEntry, int, uint32, error) {
	var (
		all    []dirEntry
		cookie uint64
		verf   [8]byte
	)
	for pages := 1; ; pages++ {
		d, st, err := c.call(procReaddirplus, &readdirplusArgs{c.header(procReaddirplus), dir, cookie, verf, maxCount / 4, maxCount})
		if err != nil || st != nfsOK {
			return all, pages, st, err
		}
		d.postOpAttr()
		d.fixed(verf[:])
		if pages == 1 {
			c.listVerf = verf
		}
		n := 0
		for d.bool() {
			var e dirEntry
			e.FileID = d.u64()
			e.Name = string(d.opaque())
			e.Cookie = d.u64()
			e.Attr, e.HasAtt = d.postOpAttr()
			e.FH, _ = d.postOpFH()
			cookie = e.Cookie
			all = append(all, e)
			n++
		}
		eof := d.bool()
		if d.err != nil {
			return all, pages, st, fmt.Errorf("READDIRPLUS: %w", d.err)
		}
		if eof {
			return all, pages, st, nil
		}
		if n == 0 {
			return all, pages, st, errors.New("READDIRPLUS: a page with no entries and no EOF")
		}
		if pages > 100000 {
			return all, pages, st, errors.New("READDIRPLUS: more than 100000 pages")
		}
	}
}

// decoder reads XDR from a reply; the first error sticks.
type decoder struct {
	r   io.Reader
	err error
	b   [8]byte
}

func (d *decoder) fixed(p []byte) {
	if d.err != nil {
		return
	}
	_, d.err = io.ReadFull(d.r, p)
}

func (d *decoder) u32() uint32 {
	d.fixed(d.b[:4])
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint32(d.b[:4])
}

func (d *decoder) u64() uint64 {
	d.fixed(d.b[:8])
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint64(d.b[:8])
}

func (d *decoder) bool() bool { return d.u32() != 0 }

func (d *decoder) opaque() []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if n > 64<<20 {
		d.err = fmt.Errorf("opaque of %d bytes", n)
		return nil
	}
	p := make([]byte, (n+3)&^3)
	d.fixed(p)
	return p[:n]
}

func (d *decoder) fattr() fattr {
	var a fattr
	a.Type, a.Mode, a.Nlink, a.UID, a.GID = d.u32(), d.u32(), d.u32(), d.u32(), d.u32()
	a.Size, a.Used = d.u64(), d.u64()
	a.Rdev[0], a.Rdev[1] = d.u32(), d.u32()
	a.FSID, a.FileID = d.u64(), d.u64()
	for _, t := range []*[2]uint32{&a.Atime, &a.Mtime, &a.Ctime} {
		t[0], t[1] = d.u32(), d.u32()
	}
	return a
}

func (d *decoder) postOpAttr() (fattr, bool) {
	if !d.bool() {
		return fattr{}, false
	}
	return d.fattr(), true
}

func (d *decoder) postOpFH() ([]byte, bool) {
	if !d.bool() {
		return nil, false
	}
	return d.opaque(), true
}

// wcc reads wcc_data and returns the post-operation attributes.
func (d *decoder) wcc() (fattr, bool) {
	if d.bool() { // pre_op_attr: size, mtime, ctime
		d.u64()
		d.u64()
		d.u64()
	}
	return d.postOpAttr()
}
