package main

import (
	"encoding/binary"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NFSv3 attributes as the front end writes them (RFC 1813 sections 2.5 and 2.6). go-nfs
// derives fattr3 from an os.FileInfo alone: one time for atime, mtime and ctime, no
// setuid/setgid/sticky (os.FileMode keeps them above the 16 bits a client reads), fsid 0
// and used = size. The union's FileInfo.Sys() is the real *syscall.Stat_t, so the front
// end encodes from that.

// fattr3Size is the XDR size of a fattr3.
const fattr3Size = 84

// nfs ftype3 values.
const (
	nf3Reg  = 1
	nf3Dir  = 2
	nf3Blk  = 3
	nf3Chr  = 4
	nf3Lnk  = 5
	nf3Sock = 6
	nf3Fifo = 7
)

// statOf returns the stat behind a union FileInfo.
func statOf(fi os.FileInfo) *syscall.Stat_t {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st
	}
	// Not a union FileInfo: synthesise what the interface tells.
	st := &syscall.Stat_t{Size: fi.Size(), Nlink: 1}
	m := fi.Mode()
	st.Mode = uint32(m.Perm())
	switch {
	case m.IsDir():
		st.Mode |= syscall.S_IFDIR
	case m&os.ModeSymlink != 0:
		st.Mode |= syscall.S_IFLNK
	default:
		st.Mode |= syscall.S_IFREG
	}
	mt := unix.NsecToTimespec(fi.ModTime().UnixNano())
	st.Mtim = syscall.Timespec{Sec: mt.Sec, Nsec: mt.Nsec}
	st.Atim, st.Ctim = st.Mtim, st.Mtim
	return st
}

func ftypeOf(mode uint32) uint32 {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return nf3Dir
	case syscall.S_IFLNK:
		return nf3Lnk
	case syscall.S_IFBLK:
		return nf3Blk
	case syscall.S_IFCHR:
		return nf3Chr
	case syscall.S_IFSOCK:
		return nf3Sock
	case syscall.S_IFIFO:
		return nf3Fifo
	}
	return nf3Reg
}

func (w *xdrWriter) uint64(v uint64) {
	w.uint32(uint32(v >> 32))
	w.uint32(uint32(v))
}

func (w *xdrWriter) nfstime(ts syscall.Timespec) {
	w.uint32(uint32(ts.Sec))
	w.uint32(uint32(ts.Nsec))
}

// fattr3 writes the attributes of st; fsid is the export's.
func (w *xdrWriter) fattr3(st *syscall.Stat_t, fsid uint64) {
	w.uint32(ftypeOf(st.Mode))
	w.uint32(st.Mode & 0o7777)
	w.uint32(uint32(st.Nlink))
	w.uint32(st.Uid)
	w.uint32(st.Gid)
	w.uint64(uint64(st.Size))
	w.uint64(uint64(st.Blocks) * 512)
	w.uint32(unix.Major(uint64(st.Rdev)))
	w.uint32(unix.Minor(uint64(st.Rdev)))
	w.uint64(fsid)
	w.uint64(st.Ino)
	w.nfstime(st.Atim)
	w.nfstime(st.Mtim)
	w.nfstime(st.Ctim)
}

// postOpAttr writes post_op_attr: the attributes when st is known.
func (w *xdrWriter) postOpAttr(st *syscall.Stat_t, fsid uint64) {
	if st == nil {
		w.uint32(0)
		return
	}
	w.uint32(1)
	w.fattr3(st, fsid)
}

// wccData writes wcc_data: pre_op_attr (size, mtime, ctime before) and post_op_attr.
func (w *xdrWriter) wccData(pre, post *syscall.Stat_t, fsid uint64) {
	if pre == nil {
		w.uint32(0)
	} else {
		w.uint32(1)
		w.uint64(uint64(pre.Size))
		w.nfstime(pre.Mtim)
		w.nfstime(pre.Ctim)
	}
	w.postOpAttr(post, fsid)
}

// time_how of sattr3's times.
const (
	dontChange      = 0
	setToServerTime = 1
	setToClientTime = 2
)

// sattr3 is a decoded sattr3: nil fields are not to be set.
type sattr3 struct {
	mode, uid, gid *uint32
	size           *uint64
	atime, mtime   *time.Time
	clientTime     bool // a time is set to the client's value, not the server's clock
}

func (r *xdrReader) uint64() uint64 {
	hi := r.uint32()
	return uint64(hi)<<32 | uint64(r.uint32())
}

func (r *xdrReader) sattr3() sattr3 {
	var s sattr3
	u32 := func() *uint32 {
		if r.uint32() == 0 {
			return nil
		}
		v := r.uint32()
		return &v
	}
	s.mode, s.uid, s.gid = u32(), u32(), u32()
	if r.uint32() != 0 {
		v := r.uint64()
		s.size = &v
	}
	tm := func() *time.Time {
		switch r.uint32() {
		case setToServerTime:
			now := time.Now()
			return &now
		case setToClientTime:
			s.clientTime = true
			sec, nsec := r.uint32(), r.uint32()
			t := time.Unix(int64(sec), int64(nsec))
			return &t
		}
		return nil
	}
	s.atime, s.mtime = tm(), tm()
	return s
}

func (s *sattr3) empty() bool {
	return s.mode == nil && s.uid == nil && s.gid == nil && s.size == nil && s.atime == nil && s.mtime == nil
}

// Attributes in the replies go-nfs writes (READ, WRITE, COMMIT, READLINK, FSSTAT, PATHCONF)
// are rewritten from the union's stat, so that every reply agrees with GETATTR: a client
// that saw a different ctime, mode or fsid in a READ reply than in GETATTR would drop its
// caches, or take the object for another filesystem (Linux reading the root's fsid from
// FSINFO and then go-nfs's fsid 0 from FSSTAT at mount time could not enter the mount).

// fixAttributes rewrites the attributes of a successful go-nfs reply in place (WRITE's
// pre-operation attributes, which go-nfs fills with mtime as ctime, are dropped, which
// makes a new record).
func (fe *frontEnd) fixAttributes(call *pendingCall, record []byte, statusAt int) []byte {
	if call.objHandle == nil || fe.fs == nil {
		return record
	}
	f, elems, err := fe.handler.FromHandle(call.objHandle)
	if err != nil {
		return record
	}
	path := joinUnion(f, elems)
	at := statusAt + 4
	switch call.proc {
	case procReadlink, procRead, procFsstat, procPathconf:
		fe.patchPostOpAttr(record, at, path)
	case procWrite, procCommit:
		if at+4 > len(record) {
			return record
		}
		if binary.BigEndian.Uint32(record[at:]) == 1 && at+4+24 <= len(record) {
			out := make([]byte, 0, len(record)-24)
			out = append(out, record[:at]...)
			out = append(out, 0, 0, 0, 0)
			record = append(out, record[at+4+24:]...)
		}
		fe.patchPostOpAttr(record, at+4, path)
	}
	return record
}

// patchPostOpAttr rewrites the post_op_attr at `at` from path's stat when it describes the
// same object (same fileid), and returns where the next item starts.
func (fe *frontEnd) patchPostOpAttr(record []byte, at int, path string) int {
	if at+4 > len(record) {
		return len(record)
	}
	if binary.BigEndian.Uint32(record[at:]) == 0 {
		return at + 4
	}
	start := at + 4
	if start+fattr3Size > len(record) {
		return len(record)
	}
	fi, err := fe.fs.Lstat(path)
	if err == nil {
		st := statOf(fi)
		if st.Ino == binary.BigEndian.Uint64(record[start+52:]) {
			w := xdrWriter{buf: record[start : start : start+fattr3Size]}
			w.fattr3(st, fe.fsid)
		}
	}
	return start + fattr3Size
}
