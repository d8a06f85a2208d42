package nfs3

import "syscall"

// mknod answers MKNOD (RFC 1813 section 3.3.11): character and block devices, sockets and
// FIFOs. Other types answer BADTYPE.
func mknod(rq *request) error {
	d := rq.dirArgs()
	ftype := rq.args.Uint32()
	var s sattr3
	var major, minor uint32
	switch ftype {
	case nf3Chr, nf3Blk:
		s = getSattr3(rq.args)
		major, minor = rq.args.Uint32(), rq.args.Uint32()
	case nf3Sock, nf3Fifo:
		s = getSattr3(rq.args)
	}
	if err := rq.decoded(); err != nil {
		return err
	}
	rq.makeEntry(&d, &s, func(p string) error {
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
			return errBadType
		}
		return rq.namespace().Mknod(p, typ|newMode(&s, 0o644), major, minor)
	})
	return nil
}
