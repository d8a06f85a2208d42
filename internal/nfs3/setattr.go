package nfs3

import (
	"syscall"
	"time"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// setattr answers SETATTR (RFC 1813 section 3.3.2). The guard compares ctime, as the RFC
// says; the special mode bits are kept.
func setattr(rq *request) error {
	fh := rq.handle()
	s := getSattr3(rq.args)
	guard := rq.args.Bool()
	var guardSec, guardNsec uint32
	if guard {
		guardSec, guardNsec = rq.args.Uint32(), rq.args.Uint32()
	}
	if err := rq.decoded(); err != nil {
		return err
	}
	_, p, pre, err := rq.statHandle(fh)
	if err == nil && guard && (uint32(pre.Ctim.Sec) != guardSec || uint32(pre.Ctim.Nsec) != guardNsec) {
		err = errNotSync
	}
	if err == nil && rq.readOnly {
		err = syscall.EROFS // before the owner checks, as the kernel and knfsd
	}
	if err == nil {
		err = rq.who.maySetattr(pre, &s)
	}
	if err == nil {
		err = rq.apply(p, &s, pre)
	}
	rq.status(err)
	var post *syscall.Stat_t
	if pre != nil {
		post = rq.statOrNil(p)
	}
	rq.wccData(pre, post)
	return nil
}

// apply makes the changes of a sattr3 in the order that keeps them all: owner first
// (chown clears setuid/setgid), then mode, size, times. cur is the object's stat, nil for
// an object just made.
func (rq *request) apply(p string, s *sattr3, cur *syscall.Stat_t) error {
	if s.uid != nil || s.gid != nil {
		uid, gid := -1, -1
		if s.uid != nil && (cur == nil || *s.uid != cur.Uid) {
			uid = int(*s.uid)
		}
		if s.gid != nil && (cur == nil || *s.gid != cur.Gid) {
			gid = int(*s.gid)
		}
		if uid != -1 || gid != -1 {
			if err := rq.namespace().Lchown(p, uid, gid); err != nil {
				return err
			}
		}
	}
	if s.mode != nil {
		if err := rq.namespace().Chmod(p, billyunion.FileMode(*s.mode&0o7777)); err != nil {
			return err
		}
	}
	if s.size != nil {
		if cur != nil && isDir(cur) {
			return syscall.EISDIR
		}
		if *s.size > 1<<62 {
			return syscall.EFBIG
		}
		if err := rq.namespace().Truncate(p, int64(*s.size)); err != nil {
			return err
		}
		// A cached read-write descriptor stays valid across a truncate; nothing to drop.
	}
	if s.atime != nil || s.mtime != nil {
		var at, mt time.Time // zero leaves that time alone
		if s.atime != nil {
			at = *s.atime
		}
		if s.mtime != nil {
			mt = *s.mtime
		}
		if err := rq.namespace().Chtimes(p, at, mt); err != nil {
			return err
		}
	}
	return nil
}
