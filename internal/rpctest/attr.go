package rpctest

import "github.com/ovlnfs/ovlnfs/internal/xdr"

// Fattr is a decoded fattr3.
type Fattr struct {
	Ftype, Mode, Nlink, UID, GID uint32
	Size, Used, Rdev, Fsid       uint64
	Fileid                       uint64
	Atime, Mtime, Ctime          [2]uint32 // seconds, nanoseconds
}

// GetFattr reads a fattr3.
func GetFattr(r *xdr.Reader) Fattr {
	var a Fattr
	a.Ftype, a.Mode, a.Nlink, a.UID, a.GID = r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32()
	a.Size, a.Used, a.Rdev = r.Uint64(), r.Uint64(), r.Uint64()
	a.Fsid, a.Fileid = r.Uint64(), r.Uint64()
	for _, t := range []*[2]uint32{&a.Atime, &a.Mtime, &a.Ctime} {
		t[0], t[1] = r.Uint32(), r.Uint32()
	}
	return a
}

// GetPostOp reads a post_op_attr: the attributes and whether there were any.
func GetPostOp(r *xdr.Reader) (Fattr, bool) {
	if !r.Bool() {
		return Fattr{}, false
	}
	return GetFattr(r), true
}

// SkipWcc reads past a wcc_data.
func SkipWcc(r *xdr.Reader) {
	if r.Bool() {
		r.Fixed(24) // size, mtime, ctime
	}
	GetPostOp(r)
}
