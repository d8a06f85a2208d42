package nfs3

import "golang.org/x/sys/unix"

// fsstat answers FSSTAT (RFC 1813 section 3.3.18) with the real free space of the
// filesystem that takes the writes, so `df` on the client means something. A read-only
// export has nothing available.
func fsstat(rq *request) error {
	fh := rq.handle()
	if err := rq.decoded(); err != nil {
		return err
	}
	_, _, st, err := rq.statHandle(fh)
	var fs unix.Statfs_t
	if err == nil {
		err = unix.Statfs(rq.s.statfsPath, &fs)
		if err != nil {
			rq.s.logger.Warn("statfs failed", "path", rq.s.statfsPath, "err", err)
		}
	}
	rq.status(err)
	rq.postOpAttr(st)
	if err != nil {
		return nil
	}
	bsize := uint64(fs.Bsize)
	total, free, avail := fs.Blocks*bsize, fs.Bfree*bsize, fs.Bavail*bsize
	files, freeFiles, availFiles := fs.Files, fs.Ffree, fs.Ffree
	if rq.readOnly {
		avail, availFiles = 0, 0
	}
	for _, v := range []uint64{total, free, avail, files, freeFiles, availFiles} {
		rq.res.Uint64(v)
	}
	rq.res.Uint32(0) // invarsec: the figures change at any time
	return nil
}
