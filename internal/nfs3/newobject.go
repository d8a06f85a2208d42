package nfs3

import "syscall"

// What CREATE, MKDIR, SYMLINK and MKNOD share: the mode a new object gets, the
// attributes applied after it is made, and their reply (diropres3).

// newMode is the permission bits a new object is made with: those asked for, else def.
func newMode(s *sattr3, def uint32) uint32 {
	if s.mode != nil {
		return *s.mode & 0o7777
	}
	return def
}

// makeEntry checks the new entry d, makes it with mk, then applies the attributes other
// than mode and size with the caller's rights, and writes the reply.
func (rq *request) makeEntry(d *dirArgs, s *sattr3, mk func(p string) error) {
	dirPre, err := rq.checkNewEntry(d)
	if err == nil {
		err = mk(d.child())
	}
	if err == nil {
		if rest := ownerAndTimes(*s); !rest.empty() {
			err = rq.applyAsCaller(d.child(), &rest)
		}
	}
	rq.newObjectReply(d, dirPre, err)
}

// applyAsCaller applies the attributes asked for to an object just made, with the
// caller's rights: a user may not create a file and hand it to another.
func (rq *request) applyAsCaller(p string, s *sattr3) error {
	st, err := rq.stat(p)
	if err != nil {
		return err
	}
	if err := rq.who.maySetattr(st, s); err != nil {
		return err
	}
	return rq.apply(p, s, nil)
}

// newObjectReply writes diropres3: the new object's handle and attributes, and the
// directory's wcc_data.
func (rq *request) newObjectReply(d *dirArgs, dirPre *syscall.Stat_t, err error) {
	var fh []byte
	var st *syscall.Stat_t
	if err == nil {
		fh, st, err = rq.lookupHandle(d.childElems())
	}
	rq.status(err)
	if err == nil {
		rq.res.Bool(true) // handle follows
		rq.res.Opaque(fh)
		rq.postOpAttr(st)
	}
	var dirPost *syscall.Stat_t
	if dirPre != nil {
		dirPost = rq.statOrNil(d.dir)
	}
	rq.wccData(dirPre, dirPost)
}
