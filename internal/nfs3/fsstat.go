package nfs3

import "golang.org/x/sys/unix"

// fsstat answers FSSTAT (RFC 1813 section 3.3.18) with the real free space of the
// filesystem that takes the writes, so `df` on the client means something. With a quota
// (billyunion.Options.QuotaBytes, QuotaInodes) the quota is the size and what is left of
// it the free space. A read-only export has nothing available.
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
	if q, ok := rq.s.union.Quota(); ok {
		// The quota is the export's size; what is left of it, or less when the
		// filesystem itself has less.
		if q.LimitBytes > 0 {
			total, free, avail = q.LimitBytes, min(free, left(q.LimitBytes, q.Bytes)), min(avail, left(q.LimitBytes, q.Bytes))
		}
		if q.LimitInodes > 0 {
			files, freeFiles = q.LimitInodes, min(freeFiles, left(q.LimitInodes, q.Inodes))
			availFiles = freeFiles
		}
	}
	if rq.readOnly {
		avail, availFiles = 0, 0
	}
	for _, v := range []uint64{total, free, avail, files, freeFiles, availFiles} {
		rq.res.Uint64(v)
	}
	rq.res.Uint32(0) // invarsec: the figures change at any time
	return nil
}

// left is what remains of limit after used, never below 0.
func left(limit, used uint64) uint64 {
	if used >= limit {
		return 0
	}
	return limit - used
}
