package nfs3

import (
	"syscall"
)

// write answers WRITE: positional I/O on the cached read-write file (the first write to a
// lower file copies it up). An UNSTABLE write is answered UNSTABLE, and the client COMMITs
// it later; a DATA_SYNC or FILE_SYNC write is answered only after an fsync, FILE_SYNC.
// The verifier changes with every start of the server, so after a restart a client resends
// what it had not seen committed.
func write(rq *request) error {
	fh := rq.handle()
	offset := rq.args.Uint64()
	count := rq.args.Uint32()
	stable := rq.args.Uint32()
	data := rq.args.Opaque()
	if stable > stableFileSync {
		rq.args.Fail(errBadEnum)
	}
	if err := rq.decoded(); err != nil {
		return err
	}
	data = data[:min(uint32(len(data)), count)]
	_, p, st, err := rq.statHandle(fh)
	resolved := err == nil
	if err == nil {
		err = writable(st)
	}
	if err == nil && offset+uint64(len(data)) > 1<<63-1 {
		err = syscall.EFBIG
	}
	n := 0
	if err == nil {
		n, err = rq.writeAt(p, data, offset, stable != stableUnstable)
	}
	rq.status(err)
	// No pre-operation attributes: without a lock that orders them with the write they
	// could describe another write's result, and a client trusting them would keep a stale
	// cache.
	var post = st
	if resolved {
		post = rq.statOrNil(p)
	}
	rq.wccData(nil, post)
	if err != nil {
		return nil
	}
	rq.res.Uint32(uint32(n))
	if stable == stableUnstable {
		rq.res.Uint32(stableUnstable)
	} else {
		rq.res.Uint32(stableFileSync)
	}
	rq.res.Fixed(rq.s.writeVerifier[:])
	return nil
}

// writable: only regular files are written; a directory answers ISDIR, other types INVAL.
func writable(st *syscall.Stat_t) error { return readable(st) }

// writeAt writes data at offset to the file at p, syncing it when stable.
func (rq *request) writeAt(p string, data []byte, offset uint64, stable bool) (int, error) {
	f, err := rq.s.files.get(p, true)
	if err != nil {
		return 0, err
	}
	defer f.Release()
	n, err := f.WriteAt(data, int64(offset))
	if err != nil {
		return n, err
	}
	if stable {
		if err := rq.sync(f); err != nil {
			return n, err
		}
	}
	return n, nil
}

// sync makes f durable before the reply goes out.
func (rq *request) sync(f openFile) error {
	if err := f.Sync(); err != nil {
		rq.s.logger.Error("fsync failed; the client is told", "xid", rq.call.XID, "err", err)
		return err
	}
	// Logged before the reply is written: the durability test reads this order.
	rq.s.logger.Debug("fsync before reply", "xid", rq.call.XID, "call", rq.procName)
	return nil
}
