package nfs3

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Attributes as the server writes them (RFC 1813 sections 2.5 and 2.6), from the union's
// real stat: three separate times, setuid/setgid/sticky, used from the block count, and
// the export's fsid. The union's FileInfo.Sys() is the *syscall.Stat_t it describes.

// fattr3Size is the XDR size of a fattr3.
const fattr3Size = 84

// statOf returns the stat behind a union FileInfo: the FileInfo's own, shared with every
// holder of fi (billyunion.StatOf), so never to be changed; the copy Sys makes cost one
// allocation per resolved handle.
func statOf(fi os.FileInfo) *syscall.Stat_t {
	if st, ok := billyunion.StatOf(fi); ok {
		return st
	}
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

func isDir(st *syscall.Stat_t) bool { return st.Mode&syscall.S_IFMT == syscall.S_IFDIR }

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

func putTime(w *xdr.Writer, ts syscall.Timespec) {
	w.Uint32(uint32(ts.Sec))
	w.Uint32(uint32(ts.Nsec))
}

// putFattr3 writes the attributes of st; fsid is the export's.
func putFattr3(w *xdr.Writer, st *syscall.Stat_t, fsid uint64) {
	w.Uint32(ftypeOf(st.Mode))
	w.Uint32(st.Mode & 0o7777)
	w.Uint32(uint32(st.Nlink))
	w.Uint32(st.Uid)
	w.Uint32(st.Gid)
	w.Uint64(uint64(st.Size))
	w.Uint64(uint64(st.Blocks) * 512)
	w.Uint32(unix.Major(uint64(st.Rdev)))
	w.Uint32(unix.Minor(uint64(st.Rdev)))
	w.Uint64(fsid)
	w.Uint64(st.Ino)
	putTime(w, st.Atim)
	putTime(w, st.Mtim)
	putTime(w, st.Ctim)
}

// putPostOpAttr writes post_op_attr: the attributes when st is known.
func putPostOpAttr(w *xdr.Writer, st *syscall.Stat_t, fsid uint64) {
	if st == nil {
		w.Bool(false)
		return
	}
	w.Bool(true)
	putFattr3(w, st, fsid)
}

// putWccData writes wcc_data: pre_op_attr (size, mtime, ctime before) and post_op_attr.
func putWccData(w *xdr.Writer, pre, post *syscall.Stat_t, fsid uint64) {
	if pre == nil {
		w.Bool(false)
	} else {
		w.Bool(true)
		w.Uint64(uint64(pre.Size))
		putTime(w, pre.Mtim)
		putTime(w, pre.Ctim)
	}
	putPostOpAttr(w, post, fsid)
}

// sattr3 is a decoded sattr3: nil fields are not to be set.
type sattr3 struct {
	mode, uid, gid *uint32
	size           *uint64
	atime, mtime   *time.Time
	clientTime     bool // a time is set to the client's value, not the server's clock
}

func getSattr3(r *xdr.Reader) sattr3 {
	var s sattr3
	u32 := func() *uint32 {
		if !r.Bool() {
			return nil
		}
		v := r.Uint32()
		return &v
	}
	s.mode, s.uid, s.gid = u32(), u32(), u32()
	if r.Bool() {
		v := r.Uint64()
		s.size = &v
	}
	tm := func() *time.Time {
		switch r.Uint32() {
		case dontChange:
		case setToServerTime:
			now := time.Now()
			return &now
		case setToClientTime:
			s.clientTime = true
			sec, nsec := r.Uint32(), r.Uint32()
			t := time.Unix(int64(sec), int64(nsec))
			return &t
		default:
			r.Fail(errBadTimeHow)
		}
		return nil
	}
	s.atime, s.mtime = tm(), tm()
	return s
}

func (s *sattr3) empty() bool {
	return s.mode == nil && s.uid == nil && s.gid == nil && s.size == nil && s.atime == nil && s.mtime == nil
}

// ownerAndTimes is a sattr3 without mode and size, for attributes applied after an object
// was made with its mode.
func ownerAndTimes(s sattr3) sattr3 {
	s.mode, s.size = nil, nil
	return s
}
