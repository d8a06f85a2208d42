package nfs3

import (
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// rename answers RENAME (RFC 1813 section 3.3.14).
func rename(rq *request) error {
	from, to := rq.dirArgs(), rq.dirArgs()
	if err := rq.decoded(); err != nil {
		return err
	}
	fromPre, err := rq.checkDir(&from)
	var toPre *syscall.Stat_t
	if err == nil {
		toPre, err = rq.checkDir(&to)
	}
	if err == nil {
		if from.name == "." || from.name == ".." || to.name == "." || to.name == ".." {
			err = syscall.EINVAL
		} else if err = billyunion.ValidName(from.name); err == nil {
			err = billyunion.ValidName(to.name)
		}
	}
	if err == nil {
		err = rq.mayRename(&from, fromPre, &to, toPre)
	}
	if err == nil {
		err = rq.appleDoubleName(to.name)
	}
	if err == nil {
		err = rq.namespace().Rename(from.child(), to.child())
		if err == nil {
			rq.s.files.forget(from.child())
			rq.s.files.forget(to.child())
		}
	}
	rq.status(err)
	var fromPost, toPost *syscall.Stat_t
	if fromPre != nil {
		fromPost = rq.statOrNil(from.dir)
	}
	if toPre != nil {
		toPost = rq.statOrNil(to.dir)
	}
	rq.wccData(fromPre, fromPost)
	rq.wccData(toPre, toPost)
	return nil
}

// mayRename: the caller may take from's entry out of its directory and put it in to's,
// replacing what is there; moving a directory to another parent also rewrites its "..",
// which needs write permission on it.
func (rq *request) mayRename(from *dirArgs, fromDir *syscall.Stat_t, to *dirArgs, toDir *syscall.Stat_t) error {
	if rq.readOnly {
		return syscall.EROFS // before the permission checks, as the kernel and knfsd
	}
	if !rq.who.checked() {
		return nil
	}
	moved := rq.statOrNil(from.child())
	if err := rq.who.mayRemove(fromDir, moved); err != nil {
		return err
	}
	if err := rq.who.mayRemove(toDir, rq.statOrNil(to.child())); err != nil {
		return err
	}
	if moved != nil && isDir(moved) && from.dir != to.dir {
		if _, w, _ := rq.who.rights(moved); !w {
			return syscall.EACCES
		}
	}
	return nil
}
