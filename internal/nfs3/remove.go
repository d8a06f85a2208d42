package nfs3

import "syscall"

// remove answers REMOVE (RFC 1813 section 3.3.12): a directory answers ISDIR.
func remove(rq *request) error { return rq.removeEntry(false) }

// removeEntry is REMOVE and RMDIR: decode, check, remove, and drop what is cached for
// the name (open files, the handle's path).
func (rq *request) removeEntry(dir bool) error {
	d := rq.dirArgs()
	if err := rq.decoded(); err != nil {
		return err
	}
	dirPre, err := rq.checkDir(&d)
	if err == nil {
		switch {
		case dir && d.name == ".":
			err = syscall.EINVAL
		case dir && d.name == "..":
			err = syscall.ENOTEMPTY
		default:
			err = existingName(d.name)
		}
	}
	if err == nil && rq.readOnly {
		err = syscall.EROFS // before the permission checks, as the kernel and knfsd
	}
	if err == nil {
		err = rq.who.mayRemove(dirPre, rq.statOrNil(d.child()))
	}
	if err == nil {
		// The handle is made before the object goes, to drop what is cached for it.
		fh, herr := rq.s.handles.ToHandle(d.childElems())
		if dir {
			err = rq.namespace().Rmdir(d.child())
		} else {
			err = rq.namespace().Unlink(d.child())
		}
		if err == nil {
			rq.s.files.forget(d.child())
			if herr == nil {
				rq.s.handles.Forget(fh)
			}
		}
	}
	rq.status(err)
	var dirPost *syscall.Stat_t
	if dirPre != nil {
		dirPost = rq.statOrNil(d.dir)
	}
	rq.wccData(dirPre, dirPost)
	return nil
}
