package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
)

// The front end sits between the listener and go-nfs. It reads whole ONC RPC records from
// each client (reassembling fragments, which go-nfs cannot), answers what go-nfs cannot
// (rpclocal.go), hands the rest to go-nfs several at a time (frontconn.go), and sees every
// reply on its way out. That position lets it
//   - count requests in flight, so shutdown can stop reading new ones and wait for the rest;
//   - trace every call at debug level;
//   - repair the few wire formats go-nfs v0.0.4 gets wrong where nothing else reaches:
//     LINK arguments and results (go-nfs decodes them with the SYMLINK layout), and the
//     status of REMOVE/RMDIR/RENAME/LINK failures (go-nfs reduces them to IO or ACCES; the
//     real errno comes from errnoFS).
// Everything else passes through byte for byte.

// ONC RPC and NFSv3 numbers used here (RFC 5531, RFC 1813).
const (
	rpcCall  = 0
	rpcReply = 1

	progNFS   = 100003
	progMount = 100005

	procWrite  = 7
	procRemove = 12
	procRmdir  = 13
	procRename = 14
	procLink   = 15
	procCommit = 21

	stableUnstable = 0

	procReaddir     = 16
	procReaddirplus = 17

	lastFragment = 1 << 31

	// maxRecordSize refuses absurd records before allocating for them. go-nfs advertises
	// 1 GiB transfer sizes; real clients cap at 1 MiB per READ/WRITE.
	maxRecordSize = 64 << 20

	nfsStatusOK = 0
	nfsStatusIO = 5
)

var nfsProcNames = [...]string{"NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ",
	"WRITE", "CREATE", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME", "LINK", "READDIR",
	"READDIRPLUS", "FSSTAT", "FSINFO", "PATHCONF", "COMMIT"}

var mountProcNames = [...]string{"NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"}

func procName(prog, proc uint32) string {
	switch {
	case prog == progNFS && int(proc) < len(nfsProcNames):
		return "NFS." + nfsProcNames[proc]
	case prog == progMount && int(proc) < len(mountProcNames):
		return "MOUNT." + mountProcNames[proc]
	}
	return fmt.Sprintf("%d.%d", prog, proc)
}

// nfsStatusForErrno maps an errno to its NFSv3 status. Most share the number; the rest are
// listed. Unknown errnos return ok=false and the reply keeps go-nfs's status.
func nfsStatusForErrno(errno syscall.Errno) (uint32, bool) {
	switch errno {
	case syscall.EPERM, syscall.ENOENT, syscall.EIO, syscall.ENXIO, syscall.EACCES,
		syscall.EEXIST, syscall.EXDEV, syscall.ENODEV, syscall.ENOTDIR, syscall.EISDIR,
		syscall.EINVAL, syscall.EFBIG, syscall.ENOSPC, syscall.EROFS, syscall.EMLINK:
		return uint32(errno), true
	case syscall.ENAMETOOLONG:
		return 63, true
	case syscall.ENOTEMPTY:
		return 66, true
	case syscall.EDQUOT:
		return 69, true
	case syscall.ESTALE:
		return 70, true
	case syscall.ENOTSUP:
		return 10004, true
	case syscall.ELOOP:
		// NFSv3 has no ELOOP; Linux's nfsd answers a loop with NFS3ERR_IO as well, but an
		// invalid-argument answer keeps `mv a a/b` from looking like a disk failure.
		return 22, true
	}
	return 0, false
}

// pendingCall is what the front end remembers about a request until its reply passes.
type pendingCall struct {
	xid, prog, proc uint32
	started         time.Time
	errnoKey        *errnoKey // set for calls whose failure status is repaired
	isLink          bool      // the reply needs go-nfs's LINK layout turned into LINK3res
	mountDir        string    // MNT: the directory asked for, entered in the DUMP list on success
	syncHandle      []byte    // WRITE, COMMIT: the file's handle
	syncWrite       bool      // the reply may go out only once the file is on stable storage
}

// inspectCall parses a call record's header and, for the calls the front end repairs,
// their arguments. It returns the (possibly rewritten) record.
func (fe *frontEnd) inspectCall(h callHeader, record []byte) (*pendingCall, []byte) {
	call := &pendingCall{xid: h.xid, prog: h.prog, proc: h.proc, started: time.Now()}
	r := xdrReader{buf: record, pos: h.argsAt}
	if h.prog == progMount && h.proc == mountProcMnt {
		if dir := r.opaque(); r.err == nil {
			call.mountDir = string(dir)
		}
		return call, record
	}
	if h.prog != progNFS || h.vers != 3 {
		return call, record
	}
	argsAt := h.argsAt
	switch h.proc {
	case procRemove, procRmdir:
		dir, name := r.opaque(), r.opaque()
		if path, ok := fe.childPath(dir, name, r.err); ok {
			call.errnoKey = &errnoKey{op: "remove", from: path}
		}
	case procRename:
		fromDir, fromName := r.opaque(), r.opaque()
		toDir, toName := r.opaque(), r.opaque()
		from, ok1 := fe.childPath(fromDir, fromName, r.err)
		to, ok2 := fe.childPath(toDir, toName, r.err)
		if ok1 && ok2 {
			call.errnoKey = &errnoKey{op: "rename", from: from, to: to}
		}
	case procLink:
		file, dir, name := r.opaque(), r.opaque(), r.opaque()
		if r.err != nil {
			return call, record
		}
		call.isLink = true
		record = fe.rewriteLinkCall(record[:argsAt], file, dir, name, call)
	case procWrite:
		fh := r.opaque()
		_, _ = r.uint32(), r.uint32() // offset
		_ = r.uint32()                // count
		stable := r.uint32()
		if r.err == nil {
			call.syncHandle = append([]byte(nil), fh...)
			call.syncWrite = stable != stableUnstable
		}
	case procCommit:
		if fh := r.opaque(); r.err == nil {
			call.syncHandle = append([]byte(nil), fh...)
			call.syncWrite = true
		}
	case procReaddir, procReaddirplus:
		forgetVerifierAtCookieZero(&r)
	}
	return call, record
}

// forgetVerifierAtCookieZero zeroes the cookie verifier of a READDIR or READDIRPLUS that
// starts a listing (cookie 0). go-nfs serves the snapshot a verifier names whatever the
// cookie, and Linux sends the verifier it holds even when it reads a directory afresh, so
// without this a client rereading a changed directory would get the old listing. A
// verifier is meaningful only for continuing a listing (RFC 1813: 0 on the first request).
func forgetVerifierAtCookieZero(r *xdrReader) {
	_ = r.opaque() // directory handle
	cookieHi, cookieLo := r.uint32(), r.uint32()
	if r.err != nil || cookieHi != 0 || cookieLo != 0 || r.pos+8 > len(r.buf) {
		return
	}
	clear(r.buf[r.pos : r.pos+8])
}

// childPath is the union path go-nfs will compute for name inside the directory handle dir.
func (fe *frontEnd) childPath(dir, name []byte, parseErr error) (string, bool) {
	if parseErr != nil {
		return "", false
	}
	f, path, err := fe.handler.FromHandle(dir)
	if err != nil {
		return "", false
	}
	return joinUnion(f, path, string(name)), true
}

func joinUnion(f billy.Filesystem, dir []string, name ...string) string {
	elems := append(append(make([]string, 0, len(dir)+len(name)), dir...), name...)
	return f.Join(elems...)
}

// rewriteLinkCall turns LINK3args (file handle; directory handle and name of the new link)
// into the layout go-nfs v0.0.4 decodes (directory handle and name; sattr3; target path),
// with the target path taken from the file handle. A file handle that does not decode is
// put where go-nfs expects the directory handle, so go-nfs answers NFS3ERR_STALE as it
// should.
func (fe *frontEnd) rewriteLinkCall(header, file, dir, name []byte, call *pendingCall) []byte {
	var w xdrWriter
	w.buf = append(w.buf, header...)
	f, filePath, err := fe.handler.FromHandle(file)
	if err != nil {
		w.opaque(file)
		w.opaque(name)
		w.sattrUnset()
		w.opaque(nil)
		return w.buf
	}
	target := joinUnion(f, filePath)
	w.opaque(dir)
	w.opaque(name)
	w.sattrUnset()
	w.opaque([]byte(target))
	if newPath, ok := fe.childPath(dir, name, nil); ok {
		call.errnoKey = &errnoKey{op: "link", from: target, to: newPath}
	}
	return w.buf
}

// finishReply repairs and traces one reply record; nil drops it.
func (fe *frontEnd) finishReply(call *pendingCall, record []byte, client string) []byte {
	if len(record) < 8 || binary.BigEndian.Uint32(record) != call.xid {
		fe.logger.Error("go-nfs answered with another XID; reply dropped", "call", procName(call.prog, call.proc))
		return nil
	}
	fixAcceptStat(record)
	xid := call.xid

	statusAt, ok := replyResultOffset(record)
	if ok && call.prog == progMount && call.proc == mountProcMnt && statusAt+4 <= len(record) &&
		binary.BigEndian.Uint32(record[statusAt:]) == 0 {
		fe.mounts.add(client, call.mountDir)
	}
	status := uint32(0)
	hasStatus := ok && call.prog == progNFS && call.proc != 0 && statusAt+4 <= len(record)
	if hasStatus {
		status = binary.BigEndian.Uint32(record[statusAt:])
		if call.errnoKey != nil {
			if errno := fe.errnos.take(*call.errnoKey); errno != 0 && status != nfsStatusOK {
				if repaired, known := nfsStatusForErrno(errno); known && repaired != status {
					record = append([]byte(nil), record...)
					binary.BigEndian.PutUint32(record[statusAt:], repaired)
					status = repaired
				}
			}
		}
		if call.isLink {
			record = linkReplyToLINK3res(record, statusAt)
		}
		if call.syncHandle != nil && status == nfsStatusOK {
			record, status = fe.makeDurable(call, record, statusAt)
		}
	}
	if fe.logger.Enabled(context.Background(), slog.LevelDebug) {
		attrs := []any{"xid", xid, "call", procName(call.prog, call.proc), "us", time.Since(call.started).Microseconds()}
		if hasStatus {
			attrs = append(attrs, "status", status)
		}
		fe.logger.Debug("rpc", attrs...)
	}
	return record
}

// replyResultOffset returns where the procedure's results begin in an accepted, successful
// reply.
func replyResultOffset(record []byte) (int, bool) {
	r := xdrReader{buf: record}
	_ = r.uint32() // xid
	if r.uint32() != rpcReply {
		return 0, false
	}
	if r.uint32() != 0 { // MSG_ACCEPTED
		return 0, false
	}
	r.skipAuth()
	if r.uint32() != 0 { // SUCCESS
		return 0, false
	}
	return r.pos, r.err == nil
}

// linkReplyToLINK3res turns go-nfs's LINK reply (status, then CREATE's "handle follows" and
// handle, post-op attributes, directory wcc) into LINK3res (status, file post-op
// attributes, directory wcc). A failure reply gains the empty file attributes LINK3resfail
// has and go-nfs omits.
func linkReplyToLINK3res(record []byte, statusAt int) []byte {
	bodyAt := statusAt + 4
	status := binary.BigEndian.Uint32(record[statusAt:])
	out := append([]byte(nil), record[:bodyAt]...)
	if status != nfsStatusOK {
		out = append(out, 0, 0, 0, 0) // post_op_attr: attributes_follow = false
		return append(out, record[bodyAt:]...)
	}
	r := xdrReader{buf: record, pos: bodyAt}
	if r.uint32() == 1 {
		r.opaque()
	}
	if r.err != nil {
		return record
	}
	return append(out, record[r.pos:]...)
}

// xdrReader reads big-endian XDR items, remembering the first error.
type xdrReader struct {
	buf []byte
	pos int
	err error
}

func (r *xdrReader) uint32() uint32 {
	if r.err != nil {
		return 0
	}
	if r.pos+4 > len(r.buf) {
		r.err = io.ErrUnexpectedEOF
		return 0
	}
	v := binary.BigEndian.Uint32(r.buf[r.pos:])
	r.pos += 4
	return v
}

func (r *xdrReader) opaque() []byte {
	n := int(r.uint32())
	if r.err != nil {
		return nil
	}
	padded := (n + 3) &^ 3
	if n < 0 || r.pos+padded > len(r.buf) {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	v := r.buf[r.pos : r.pos+n]
	r.pos += padded
	return v
}

// skipAuth skips an opaque_auth (flavor, body).
func (r *xdrReader) skipAuth() {
	_ = r.uint32()
	_ = r.opaque()
}

type xdrWriter struct{ buf []byte }

func (w *xdrWriter) uint32(v uint32) { w.buf = binary.BigEndian.AppendUint32(w.buf, v) }

func (w *xdrWriter) opaque(b []byte) {
	w.uint32(uint32(len(b)))
	w.buf = append(w.buf, b...)
	for len(w.buf)%4 != 0 {
		w.buf = append(w.buf, 0)
	}
}

// sattrUnset writes a sattr3 that sets nothing: four "set_it = false" and two DONT_CHANGE.
func (w *xdrWriter) sattrUnset() {
	for range 6 {
		w.uint32(0)
	}
}
