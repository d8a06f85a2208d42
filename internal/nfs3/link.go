package nfs3

import "syscall"

// link answers LINK (RFC 1813 section 3.3.15): the file's handle, then the new name.
func link(rq *request) error {
	fh := rq.handle()
	d := rq.dirArgs()
	if err := rq.decoded(); err != nil {
		return err
	}
	_, target, _, err := rq.statHandle(fh)
	resolved := err == nil
	var dirPre *syscall.Stat_t
	if err == nil {
		dirPre, err = rq.checkNewEntry(&d)
	}
	if err == nil {
		err = rq.namespace().Link(target, d.child())
	}
	rq.status(err)
	var fileSt, dirPost *syscall.Stat_t
	if resolved {
		fileSt = rq.statOrNil(target)
	}
	if dirPre != nil {
		dirPost = rq.statOrNil(d.dir)
	}
	rq.postOpAttr(fileSt)
	rq.wccData(dirPre, dirPost)
	return nil
}
