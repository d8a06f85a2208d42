package nfs3

import (
	"os"
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion"
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
	_, p, info, err := rq.resolveInfo(fh)
	var st *syscall.Stat_t
	if err == nil {
		st = statOf(info)
		err = writable(st)
	}
	if err == nil && rq.readOnly {
		err = syscall.EROFS
	}
	if err == nil {
		err = rq.who.mayWrite(st)
	}
	if err == nil && offset+uint64(len(data)) > 1<<63-1 {
		err = syscall.EFBIG
	}
	n := 0
	post := st
	if err == nil {
		// Before the data, as the kernel does: a WRITE that cannot drop them writes nothing.
		err = rq.dropPrivileges(p, st)
	}
	if err == nil {
		n, post, err = rq.writeAt(p, info, data, offset, stable != stableUnstable)
	}
	rq.status(err)
	// No pre-operation attributes: without a lock that orders them with the write they
	// could describe another write's result, and a client trusting them would keep a stale
	// cache.
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

// dropPrivileges clears the setuid and setgid bits a WRITE by this caller removes from
// the file of stat st (principal.privilegesDropped); the write's post-op attributes then
// show the new mode.
func (rq *request) dropPrivileges(p string, st *syscall.Stat_t) error {
	if mode, ok := rq.who.privilegesDropped(st); ok {
		return rq.namespace().Chmod(p, billyunion.FileMode(mode))
	}
	return nil
}

// writable: only regular files are written; a directory answers ISDIR, other types INVAL.
func writable(st *syscall.Stat_t) error { return readable(st) }

// writeAt writes data at offset to the file at p, the object info describes, syncing it
// when stable, and returns the file's attributes after the write.
func (rq *request) writeAt(p string, info os.FileInfo, data []byte, offset uint64, stable bool) (int, *syscall.Stat_t, error) {
	f, _, err := rq.s.files.get(p, true, info)
	if err != nil {
		return 0, rq.statOrNil(p), err
	}
	defer f.Release()
	n, err := f.WriteAt(data, int64(offset))
	if err == nil && stable {
		err = rq.sync(f)
	}
	return n, fileAttr(f, statOf(info).Ino), err
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
