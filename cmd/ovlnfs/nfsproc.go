package main

import (
	"errors"
	"os"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// NFSv3 procedures the front end answers itself. go-nfs v0.0.4 loses the errno of nearly
// every failure in these (a failed MKDIR, CREATE or SYMLINK is ACCES, RENAME onto a
// non-empty directory is IO), RMDIR removes files, REMOVE removes directories, LINK
// decodes the wrong layout, CREATE refuses EXCLUSIVE and truncates on UNCHECKED, SETATTR
// drops setuid/setgid/sticky and guards on mtime, and its attributes carry one time for
// three. Each procedure here is a thin translation: decode the arguments, make one union
// call, map its errno to a status with nfsStatusOf, encode attributes from the real stat.
// ACCESS is answered here too: go-nfs grants whatever is asked, whoever asks. The union
// seen by each call is the caller's (cred.go), so what a client creates is its user's.
// READDIR and READDIRPLUS are in readdir.go, FSINFO in fsinfo.go. go-nfs keeps READ, WRITE,
// READLINK, FSSTAT, PATHCONF and COMMIT.

// NFSv3 procedure numbers answered here (the others are in frontend.go).
const (
	procGetattr = 1
	procSetattr = 2
	procLookup  = 3
	procCreate  = 8
	procMkdir   = 9
	procSymlink = 10
	procMknod   = 11
)

// NFSv3 statuses that have no errno.
const (
	nfsStatusNotSync     = 10002
	nfsStatusBadType     = 10007
	nfsStatusServerFault = 10006
	nfsStatusStale       = 70
	nfsStatusInval       = 22

	acceptGarbageArgs = 4
)

// createhow3 modes (RFC 1813 section 3.3.8).
const (
	createUnchecked = 0
	createGuarded   = 1
	createExclusive = 2
)

// unionOps is what these procedures need of the union; *billyunion.FS provides it and
// answers EROFS itself when it has no upper layer.
type unionOps interface {
	Lstat(p string) (os.FileInfo, error)
	OpenFile(p string, flag int, perm os.FileMode) (billy.File, error)
	Rename(from, to string) error
	Unlink(p string) error
	Rmdir(p string) error
	Mkdir(p string, perm os.FileMode) error
	Symlink(target, link string) error
	Mknod(p string, mode, major, minor uint32) error
	Link(oldpath, newpath string) error
	Chmod(p string, mode os.FileMode) error
	Lchown(p string, uid, gid int) error
	Chtimes(p string, atime, mtime time.Time) error
	Truncate(p string, size int64) error
}

// isLocalProc reports whether the front end answers this NFSv3 procedure itself.
func isLocalProc(proc uint32) bool { return localAnswer(proc) != nil }

// localAnswer returns the procedure's implementation in the front end, nil for those go-nfs
// answers: the one list of local procedures.
func localAnswer(proc uint32) func(*localProc) bool {
	switch proc {
	case procGetattr:
		return (*localProc).getattr
	case procSetattr:
		return (*localProc).setattr
	case procLookup:
		return (*localProc).lookup
	case procAccess:
		return (*localProc).access
	case procReaddir:
		return func(p *localProc) bool { return p.readdir(false) }
	case procReaddirplus:
		return func(p *localProc) bool { return p.readdir(true) }
	case procCreate:
		return (*localProc).create
	case procMkdir, procSymlink, procMknod:
		return func(p *localProc) bool { return p.makeNode(proc) }
	case procRemove:
		return func(p *localProc) bool { return p.remove(false) }
	case procRmdir:
		return func(p *localProc) bool { return p.remove(true) }
	case procRename:
		return (*localProc).rename
	case procLink:
		return (*localProc).link
	case procFsinfo:
		return (*localProc).fsinfo
	}
	return nil
}

// nfsStatusOf is the one place an error of the union becomes an NFS status.
func nfsStatusOf(err error) uint32 {
	if err == nil {
		return nfsStatusOK
	}
	var st statusError
	if errors.As(err, &st) {
		return uint32(st)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if s, ok := nfsStatusForErrno(errno); ok {
			return s
		}
	}
	// Not an errno the protocol can express: the server, not the disk, failed.
	return nfsStatusServerFault
}

// statusError is an NFS status decided by the front end itself (no errno behind it).
type statusError uint32

func (s statusError) Error() string { return "NFS status " + itoa(uint32(s)) }

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// localProc holds what one locally answered call needs.
type localProc struct {
	fe   *frontEnd
	fs   unionOps // the union as the caller sees it: what it creates is the caller's
	cred caller
	r    xdrReader
	w    *xdrWriter
	fsid uint64
}

// serveLocal answers an NFSv3 call of isLocalProc.
func (fe *frontEnd) serveLocal(call *pendingCall, record []byte) []byte {
	p := &localProc{fe: fe, fs: fe.fs, cred: call.cred, r: xdrReader{buf: record, pos: call.argsAt}, fsid: fe.fsid}
	if fe.asCaller != nil && call.cred.unix {
		p.fs = fe.asCaller(call.cred)
	}
	p.w = acceptedReply(call.xid, acceptSuccess)
	answer := localAnswer(call.proc)
	if answer == nil || !answer(p) {
		return acceptedReply(call.xid, acceptGarbageArgs).buf
	}
	return p.w.buf
}

// forgetOpen closes cached open files at path and below once their name changed meaning.
func (fe *frontEnd) forgetOpen(path string) {
	if fe.files != nil {
		fe.files.forget(path)
	}
}

// resolve turns a file handle into the union path go-nfs would use and its elements.
func (p *localProc) resolve(fh []byte) (billy.Filesystem, []string, string, error) {
	f, elems, err := p.fe.handler.FromHandle(fh)
	if err != nil {
		return nil, nil, "", statusError(nfsStatusStale)
	}
	return f, elems, joinUnion(f, elems), nil
}

func (p *localProc) stat(path string) (*syscall.Stat_t, error) {
	fi, err := p.fs.Lstat(path)
	if err != nil {
		return nil, err
	}
	return statOf(fi), nil
}

// statOrNil is for attributes that are optional in a reply.
func (p *localProc) statOrNil(path string) *syscall.Stat_t {
	st, _ := p.stat(path)
	return st
}

// dirArgs decodes diropargs3 and resolves the directory.
type dirArgs struct {
	f     billy.Filesystem
	elems []string
	dir   string // the directory's union path
	name  string
	err   error // the directory did not resolve
}

func (p *localProc) dirArgs() dirArgs {
	fh, name := p.r.opaque(), p.r.opaque()
	var d dirArgs
	d.name = string(name)
	d.f, d.elems, d.dir, d.err = p.resolve(fh)
	return d
}

func (d *dirArgs) child() string { return joinUnion(d.f, d.elems, d.name) }

func (d *dirArgs) childElems() []string {
	return append(append(make([]string, 0, len(d.elems)+1), d.elems...), d.name)
}

// checkNewName refuses a name no entry can have. "." and ".." exist already.
func checkNewName(name string) error {
	if name == "." || name == ".." {
		return syscall.EEXIST
	}
	return billyunion.ValidName(name)
}

// checkNewEntry checks a diropargs3 that names an entry to make: the directory is one, the
// name can be an entry's, and the caller may add to the directory (unless the name exists
// already: what that means is the procedure's to say). It returns the directory's stat.
func (p *localProc) checkNewEntry(d *dirArgs) (*syscall.Stat_t, error) {
	dirSt, err := p.checkDir(d)
	if err == nil {
		err = checkNewName(d.name)
	}
	if err == nil && p.statOrNil(d.child()) == nil {
		err = p.cred.mayChangeDir(dirSt)
	}
	return dirSt, err
}

// checkDir makes sure the directory of a diropargs3 is one.
func (p *localProc) checkDir(d *dirArgs) (*syscall.Stat_t, error) {
	if d.err != nil {
		return nil, d.err
	}
	st, err := p.stat(d.dir)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, statusError(nfsStatusStale)
		}
		return nil, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return st, syscall.ENOTDIR
	}
	return st, nil
}

// statHandle resolves fh and stats the object: STALE when either fails to find it.
func (p *localProc) statHandle(fh []byte) (billy.Filesystem, []string, string, *syscall.Stat_t, error) {
	f, elems, path, err := p.resolve(fh)
	if err != nil {
		return nil, nil, "", nil, err
	}
	st, err := p.stat(path)
	if errors.Is(err, syscall.ENOENT) {
		err = statusError(nfsStatusStale)
	}
	return f, elems, path, st, err
}

func (p *localProc) getattr() bool {
	fh := p.r.opaque()
	if p.r.err != nil {
		return false
	}
	_, _, _, st, err := p.statHandle(fh)
	p.w.uint32(nfsStatusOf(err))
	if err == nil {
		p.w.fattr3(st, p.fsid)
	}
	return true
}

// access answers ACCESS for the caller from the object's mode and owner (cred.go).
func (p *localProc) access() bool {
	fh := p.r.opaque()
	asked := p.r.uint32()
	if p.r.err != nil {
		return false
	}
	_, _, _, st, err := p.statHandle(fh)
	p.w.uint32(nfsStatusOf(err))
	p.w.postOpAttr(st, p.fsid)
	if err == nil {
		p.w.uint32(accessFor(p.cred, st, asked, p.fe.readOnly))
	}
	return true
}

func (p *localProc) setattr() bool {
	fh := p.r.opaque()
	s := p.r.sattr3()
	guard := p.r.uint32() != 0
	var guardSec, guardNsec uint32
	if guard {
		guardSec, guardNsec = p.r.uint32(), p.r.uint32()
	}
	if p.r.err != nil {
		return false
	}
	_, _, path, err := p.resolve(fh)
	var pre *syscall.Stat_t
	if err == nil {
		pre, err = p.stat(path)
	}
	if err == nil && guard && (uint32(pre.Ctim.Sec) != guardSec || uint32(pre.Ctim.Nsec) != guardNsec) {
		err = statusError(nfsStatusNotSync)
	}
	if err == nil {
		err = p.cred.maySetattr(pre, &s)
	}
	if err == nil {
		err = p.apply(path, &s, pre)
	}
	p.w.uint32(nfsStatusOf(err))
	var post *syscall.Stat_t
	if pre != nil {
		post = p.statOrNil(path)
	}
	p.w.wccData(pre, post, p.fsid)
	return true
}

// apply makes the changes of a sattr3 in the order that keeps them all: owner first
// (chown clears setuid/setgid), then mode, size, times.
func (p *localProc) apply(path string, s *sattr3, cur *syscall.Stat_t) error {
	if s.uid != nil || s.gid != nil {
		uid, gid := -1, -1
		if s.uid != nil && (cur == nil || *s.uid != cur.Uid) {
			uid = int(*s.uid)
		}
		if s.gid != nil && (cur == nil || *s.gid != cur.Gid) {
			gid = int(*s.gid)
		}
		if uid != -1 || gid != -1 {
			if err := p.fs.Lchown(path, uid, gid); err != nil {
				return err
			}
		}
	}
	if s.mode != nil {
		if err := p.fs.Chmod(path, billyunion.FileMode(*s.mode&0o7777)); err != nil {
			return err
		}
	}
	if s.size != nil {
		if cur != nil && cur.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			return syscall.EISDIR
		}
		if *s.size > 1<<62 {
			return syscall.EFBIG
		}
		if err := p.fs.Truncate(path, int64(*s.size)); err != nil {
			return err
		}
	}
	if s.atime != nil || s.mtime != nil {
		var at, mt time.Time // zero leaves that time alone
		if s.atime != nil {
			at = *s.atime
		}
		if s.mtime != nil {
			mt = *s.mtime
		}
		if err := p.fs.Chtimes(path, at, mt); err != nil {
			return err
		}
	}
	return nil
}

func (p *localProc) lookup() bool {
	d := p.dirArgs()
	if p.r.err != nil {
		return false
	}
	dirSt, err := p.checkDir(&d)
	var elems []string
	var st *syscall.Stat_t
	if err == nil {
		switch d.name {
		case ".":
			elems = d.elems
		case "..":
			elems = d.elems
			if len(elems) > 0 {
				elems = elems[:len(elems)-1]
			}
		default:
			if err = billyunion.ValidName(d.name); err == syscall.EINVAL {
				err = syscall.ENOENT // a name with "/" names nothing here
			}
			elems = d.childElems()
		}
	}
	if err == nil {
		st, err = p.stat(joinUnion(d.f, elems))
	}
	var fh []byte
	if err == nil {
		if fh = p.fe.handler.ToHandle(d.f, elems); len(fh) == 0 {
			err = statusError(nfsStatusServerFault)
		}
	}
	p.w.uint32(nfsStatusOf(err))
	if err == nil {
		p.w.opaque(fh)
		p.w.postOpAttr(st, p.fsid)
	}
	p.w.postOpAttr(dirSt, p.fsid)
	return true
}

// applyAsCaller applies the attributes a CREATE, MKDIR, SYMLINK or MKNOD asked for to the
// object it made, with the caller's rights: a user may not create a file and hand it to
// another.
func (p *localProc) applyAsCaller(path string, s *sattr3) error {
	st, err := p.stat(path)
	if err != nil {
		return err
	}
	if err := p.cred.maySetattr(st, s); err != nil {
		return err
	}
	return p.apply(path, s, nil)
}

// mayRename: the caller may take from's entry out of its directory and put it in to's,
// replacing what is there; moving a directory to another parent also rewrites its "..",
// which needs write permission on it.
func (p *localProc) mayRename(from *dirArgs, fromDir *syscall.Stat_t, to *dirArgs, toDir *syscall.Stat_t) error {
	if !p.cred.checked() {
		return nil
	}
	moved := p.statOrNil(from.child())
	if err := p.cred.mayRemove(fromDir, moved); err != nil {
		return err
	}
	if err := p.cred.mayRemove(toDir, p.statOrNil(to.child())); err != nil {
		return err
	}
	if moved != nil && moved.Mode&syscall.S_IFMT == syscall.S_IFDIR && from.dir != to.dir {
		if _, w, _ := p.cred.rights(moved); !w {
			return syscall.EACCES
		}
	}
	return nil
}

// newObjectReply writes the result of CREATE, MKDIR, SYMLINK and MKNOD.
func (p *localProc) newObjectReply(d *dirArgs, dirPre *syscall.Stat_t, err error) {
	var fh []byte
	var st *syscall.Stat_t
	if err == nil {
		st, err = p.stat(d.child())
	}
	if err == nil {
		if fh = p.fe.handler.ToHandle(d.f, d.childElems()); len(fh) == 0 {
			err = statusError(nfsStatusServerFault)
		}
	}
	p.w.uint32(nfsStatusOf(err))
	if err == nil {
		p.w.uint32(1) // handle follows
		p.w.opaque(fh)
		p.w.postOpAttr(st, p.fsid)
	}
	var dirPost *syscall.Stat_t
	if dirPre != nil {
		dirPost = p.statOrNil(d.dir)
	}
	p.w.wccData(dirPre, dirPost, p.fsid)
}

// ownerAndTimes is a sattr3 without mode and size, for attributes applied after an object
// was made with its mode.
func ownerAndTimes(s sattr3) sattr3 {
	s.mode, s.size = nil, nil
	return s
}

func (p *localProc) makeNode(proc uint32) bool {
	d := p.dirArgs()
	var s sattr3
	var target []byte
	var ftype, major, minor uint32
	switch proc {
	case procMkdir:
		s = p.r.sattr3()
	case procSymlink:
		s = p.r.sattr3()
		target = p.r.opaque()
	case procMknod:
		ftype = p.r.uint32()
		switch ftype {
		case nf3Chr, nf3Blk:
			s = p.r.sattr3()
			major, minor = p.r.uint32(), p.r.uint32()
		case nf3Sock, nf3Fifo:
			s = p.r.sattr3()
		}
	}
	if p.r.err != nil {
		return false
	}
	dirPre, err := p.checkNewEntry(&d)
	if err == nil {
		path := d.child()
		mode := uint32(0o755)
		if proc != procMkdir {
			mode = 0o644
		}
		if s.mode != nil {
			mode = *s.mode & 0o7777
		}
		switch proc {
		case procMkdir:
			err = p.fs.Mkdir(path, billyunion.FileMode(mode))
		case procSymlink:
			err = p.fs.Symlink(string(target), path)
		case procMknod:
			var typ uint32
			switch ftype {
			case nf3Chr:
				typ = syscall.S_IFCHR
			case nf3Blk:
				typ = syscall.S_IFBLK
			case nf3Sock:
				typ = syscall.S_IFSOCK
			case nf3Fifo:
				typ = syscall.S_IFIFO
			default:
				err = statusError(nfsStatusBadType)
			}
			if err == nil {
				err = p.fs.Mknod(path, typ|mode, major, minor)
			}
		}
		if err == nil {
			rest := ownerAndTimes(s)
			if !rest.empty() {
				err = p.applyAsCaller(path, &rest)
			}
		}
	}
	p.newObjectReply(&d, dirPre, err)
	return true
}

func (p *localProc) remove(rmdir bool) bool {
	d := p.dirArgs()
	if p.r.err != nil {
		return false
	}
	dirPre, err := p.checkDir(&d)
	if err == nil {
		switch {
		case rmdir && d.name == ".":
			err = syscall.EINVAL
		case rmdir && d.name == "..":
			err = syscall.ENOTEMPTY
		default:
			if err = billyunion.ValidName(d.name); err == syscall.EINVAL {
				err = syscall.ENOENT
			}
		}
	}
	if err == nil {
		err = p.cred.mayRemove(dirPre, p.statOrNil(d.child()))
	}
	if err == nil {
		// The handle is made before the object goes, to drop what is cached for it.
		fh := p.fe.handler.ToHandle(d.f, d.childElems())
		if rmdir {
			err = p.fs.Rmdir(d.child())
		} else {
			err = p.fs.Unlink(d.child())
		}
		if err == nil {
			p.fe.forgetOpen(d.child())
			if len(fh) > 0 {
				_ = p.fe.handler.InvalidateHandle(d.f, fh)
			}
		}
	}
	p.w.uint32(nfsStatusOf(err))
	var dirPost *syscall.Stat_t
	if dirPre != nil {
		dirPost = p.statOrNil(d.dir)
	}
	p.w.wccData(dirPre, dirPost, p.fsid)
	return true
}

func (p *localProc) rename() bool {
	from, to := p.dirArgs(), p.dirArgs()
	if p.r.err != nil {
		return false
	}
	fromPre, err := p.checkDir(&from)
	var toPre *syscall.Stat_t
	if err == nil {
		toPre, err = p.checkDir(&to)
	}
	if err == nil {
		if from.name == "." || from.name == ".." || to.name == "." || to.name == ".." {
			err = syscall.EINVAL
		} else if err = billyunion.ValidName(from.name); err == nil {
			err = billyunion.ValidName(to.name)
		}
	}
	if err == nil {
		err = p.mayRename(&from, fromPre, &to, toPre)
	}
	if err == nil {
		err = p.fs.Rename(from.child(), to.child())
		if err == nil {
			p.fe.forgetOpen(from.child())
			p.fe.forgetOpen(to.child())
		}
	}
	p.w.uint32(nfsStatusOf(err))
	var fromPost, toPost *syscall.Stat_t
	if fromPre != nil {
		fromPost = p.statOrNil(from.dir)
	}
	if toPre != nil {
		toPost = p.statOrNil(to.dir)
	}
	p.w.wccData(fromPre, fromPost, p.fsid)
	p.w.wccData(toPre, toPost, p.fsid)
	return true
}

func (p *localProc) link() bool {
	fh := p.r.opaque()
	d := p.dirArgs()
	if p.r.err != nil {
		return false
	}
	_, _, target, err := p.resolve(fh)
	var dirPre *syscall.Stat_t
	if err == nil {
		dirPre, err = p.checkNewEntry(&d)
	}
	if err == nil {
		err = p.fs.Link(target, d.child())
	}
	p.w.uint32(nfsStatusOf(err))
	var fileSt, dirPost *syscall.Stat_t
	if target != "" {
		fileSt = p.statOrNil(target)
	}
	if dirPre != nil {
		dirPost = p.statOrNil(d.dir)
	}
	p.w.postOpAttr(fileSt, p.fsid)
	p.w.wccData(dirPre, dirPost, p.fsid)
	return true
}

// create answers CREATE in its three modes (RFC 1813 section 3.3.8).
func (p *localProc) create() bool {
	d := p.dirArgs()
	how := p.r.uint32()
	var s sattr3
	var verf [8]byte
	switch how {
	case createUnchecked, createGuarded:
		s = p.r.sattr3()
	case createExclusive:
		copy(verf[:], p.r.fixed(8))
	default:
		p.r.err = syscall.EINVAL
	}
	if p.r.err != nil {
		return false
	}
	dirPre, err := p.checkNewEntry(&d)
	if err == nil {
		if how == createExclusive {
			err = p.createExclusive(d.child(), verf)
		} else {
			err = p.createChecked(d.child(), how == createGuarded, &s)
		}
	}
	p.newObjectReply(&d, dirPre, err)
	return true
}

// createChecked is UNCHECKED and GUARDED. UNCHECKED on an existing regular file keeps its
// data unless the client asked for a size (as Linux's nfsd does, and what `>` through an
// NFS mount expects: the size-0 SETATTR is how the client truncates).
func (p *localProc) createChecked(path string, guarded bool, s *sattr3) error {
	mode := uint32(0o644)
	if s.mode != nil {
		mode = *s.mode & 0o7777
	}
	f, err := p.fs.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, billyunion.FileMode(mode))
	if err == nil {
		if err := f.Close(); err != nil {
			return err
		}
		rest := *s
		rest.mode = nil
		if mode&0o7000 != 0 {
			// Creation masks special bits like open(2) with a umask would; set them as asked.
			rest.mode = &mode
		}
		if rest.size != nil && *rest.size == 0 {
			rest.size = nil
		}
		if rest.empty() {
			return nil
		}
		return p.applyAsCaller(path, &rest)
	}
	if !errors.Is(err, syscall.EEXIST) || guarded {
		return err
	}
	st, serr := p.stat(path)
	if serr != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return syscall.EEXIST
	}
	if s.size == nil {
		return nil
	}
	only := sattr3{size: s.size}
	if err := p.cred.maySetattr(st, &only); err != nil {
		return err
	}
	return p.apply(path, &only, st)
}

// createExclusive stores the client's verifier in the new file's atime and mtime seconds,
// where a retransmission finds it; the client sets the real times and mode right after
// with SETATTR.
func (p *localProc) createExclusive(path string, verf [8]byte) error {
	atime := uint32(verf[0])<<24 | uint32(verf[1])<<16 | uint32(verf[2])<<8 | uint32(verf[3])
	mtime := uint32(verf[4])<<24 | uint32(verf[5])<<16 | uint32(verf[6])<<8 | uint32(verf[7])
	matches := func() bool {
		st, err := p.stat(path)
		return err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG &&
			uint32(st.Atim.Sec) == atime && uint32(st.Mtim.Sec) == mtime
	}
	f, err := p.fs.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, syscall.EEXIST) && matches() {
			return nil // a retransmission of the create that made it
		}
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return p.fs.Chtimes(path, time.Unix(int64(atime), 0), time.Unix(int64(mtime), 0))
}
