package nfs3

import "syscall"

// lookup answers LOOKUP (RFC 1813 section 3.3.3). ".." of the export root is the root.
func lookup(rq *request) error {
	d := rq.dirArgs()
	if err := rq.decoded(); err != nil {
		return err
	}
	dirSt, err := rq.checkDir(&d)
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
			err = existingName(d.name)
			elems = d.childElems()
		}
	}
	var fh []byte
	if err == nil {
		fh, st, err = rq.lookupHandle(elems)
	}
	rq.status(err)
	if err == nil {
		rq.res.Opaque(fh)
		rq.postOpAttr(st)
	}
	rq.postOpAttr(dirSt)
	return nil
}
