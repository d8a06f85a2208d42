package nfs3

import (
	"path"
	"syscall"
)

// lookup answers LOOKUP (RFC 1813 section 3.3.3). ".." of the export root is the root.
// A plain name is looked up with the directory's handle in one union lookup
// (handles.LookupIn); "." and ".." resolve the directory first.
func lookup(rq *request) error {
	fh, name := rq.handle(), rq.name()
	if err := rq.decoded(); err != nil {
		return err
	}
	if name == "." || name == ".." || existingName(name) != nil {
		return lookupResolved(rq, fh, name)
	}
	f := rq.s.handles.LookupIn(fh, name)
	if f.DirErr != nil {
		rq.status(rq.staleHandle(fh, f.DirErr))
		rq.postOpAttr(nil)
		return nil
	}
	var st *syscall.Stat_t
	err := f.Err // ENOTDIR when the handle names no directory
	if err == nil {
		err = checkMade(f.Handle, f.Info)
	}
	if err != nil {
		err = rq.lookupFailed(path.Join(f.DirPath, name), err)
	} else {
		st = statOf(f.Info)
	}
	lookupReply(rq, err, f.Handle, st, statOf(f.DirInfo))
	return nil
}

// lookupReply encodes LOOKUP's result: the handle and attributes found (when err is
// nil), then the directory's attributes.
func lookupReply(rq *request, err error, fh []byte, st, dirSt *syscall.Stat_t) {
	rq.status(err)
	if err == nil {
		rq.res.Opaque(fh)
		rq.postOpAttr(st)
	}
	rq.postOpAttr(dirSt)
}

// lookupResolved is LOOKUP of ".", ".." and names no entry can have, which resolve the
// directory's handle first: the reply carries its attributes whatever the name.
func lookupResolved(rq *request, fh []byte, name string) error {
	d := dirArgs{name: name}
	d.elems, d.dir, d.st, d.err = rq.statHandle(fh)
	dirSt, err := rq.checkDir(&d)
	var elems []string
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
		}
	}
	var out []byte
	var st *syscall.Stat_t
	if err == nil {
		out, st, err = rq.lookupHandle(elems)
	}
	lookupReply(rq, err, out, st, dirSt)
	return nil
}
