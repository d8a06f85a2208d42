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
//   - answer the namespace and attribute procedures itself (nfsproc.go), where go-nfs
//     v0.0.4 loses errnos, mis-decodes LINK, lacks exclusive CREATE and reports one time
//     for three;
//   - repair the status of the procedures go-nfs answers from the errno errnoFS recorded.
// Everything else passes through byte for byte.

// ONC RPC and NFSv3 numbers used here (RFC 5531, RFC 1813).
const (
	rpcCall  = 0
	rpcReply = 1

	progNFS   = 100003
	progMount = 100005

	procAccess      = 4
	procReadlink    = 5
	procRead        = 6
	procWrite       = 7
	procReaddir     = 16
	procReaddirplus = 17
	procRemove      = 12
	procRmdir       = 13
	procRename      = 14
	procLink        = 15
	procFsstat      = 18
	procPathconf    = 20
	procCommit      = 21

	stableUnstable = 0

	lastFragment = 1 << 31

	// maxRecordSize refuses absurd records before allocating for them; FSINFO offers 1 MiB
	// per READ/WRITE.
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
	argsAt          int    // offset of the procedure's arguments in the call record
	local           bool   // answered by the front end's own procedures (nfsproc.go)
	objHandle       []byte // go-nfs procedures: the object whose failure errno may be recorded
	mountDir        string // MNT: the directory asked for, entered in the DUMP list on success
	syncHandle      []byte // WRITE, COMMIT: the file's handle
	syncWrite       bool   // the reply may go out only once the file is on stable storage
	cred            caller // who the call says it comes from
}

// inspectCall parses a call record's header and, for the calls the front end repairs,
// their arguments.
func (fe *frontEnd) inspectCall(h callHeader, record []byte) *pendingCall {
	call := &pendingCall{xid: h.xid, prog: h.prog, proc: h.proc, started: time.Now(), argsAt: h.argsAt, cred: h.cred}
	r := xdrReader{buf: record, pos: h.argsAt}
	if h.prog == progMount && h.proc == mountProcMnt {
		if dir := r.opaque(); r.err == nil {
			call.mountDir = string(dir)
		}
		return call
	}
	if h.prog != progNFS || h.vers != 3 {
		return call
	}
	if fe.fs != nil && isLocalProc(h.proc) {
		call.local = true
		return call
	}
	switch h.proc {
	case procWrite:
		fh := r.opaque()
		_, _ = r.uint32(), r.uint32() // offset
		_ = r.uint32()                // count
		stable := r.uint32()
		if r.err == nil {
			call.syncHandle = append([]byte(nil), fh...)
			call.syncWrite = stable != stableUnstable
			call.objHandle = call.syncHandle
		}
	case procCommit:
		if fh := r.opaque(); r.err == nil {
			call.syncHandle = append([]byte(nil), fh...)
			call.syncWrite = true
			call.objHandle = call.syncHandle
		}
	case procReadlink, procRead, procFsstat, procPathconf:
		if fh := r.opaque(); r.err == nil {
			call.objHandle = append([]byte(nil), fh...)
		}
	}
	return call
}

func joinUnion(f billy.Filesystem, dir []string, name ...string) string {
	elems := append(append(make([]string, 0, len(dir)+len(name)), dir...), name...)
	return f.Join(elems...)
}

// repairStatus puts the errno errnoFS recorded for a failed go-nfs call on the wire in
// place of the status go-nfs chose (mostly ACCES or IO).
func (fe *frontEnd) repairStatus(call *pendingCall, record []byte, statusAt int, status uint32) ([]byte, uint32) {
	if call.objHandle == nil || status == nfsStatusOK {
		return record, status
	}
	f, elems, err := fe.handler.FromHandle(call.objHandle)
	if err != nil {
		return record, status
	}
	errno := fe.errnos.take(errnoKey{op: "obj", from: joinUnion(f, elems)})
	if errno == 0 {
		return record, status
	}
	repaired := nfsStatusOf(errno)
	if repaired == status {
		return record, status
	}
	record = append([]byte(nil), record...)
	binary.BigEndian.PutUint32(record[statusAt:], repaired)
	return record, repaired
}

// finishReply repairs and traces one reply record; nil drops it.
func (fe *frontEnd) finishReply(call *pendingCall, record []byte, client string) []byte {
	if len(record) < 8 || binary.BigEndian.Uint32(record) != call.xid {
		fe.logger.Error("go-nfs answered with another XID; reply dropped", "call", procName(call.prog, call.proc))
		return nil
	}
	if !call.local {
		fixAcceptStat(record)
	}
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
		if !call.local {
			record, status = fe.repairStatus(call, record, statusAt, status)
			if status == nfsStatusOK {
				record = fe.fixAttributes(call, record, statusAt)
			}
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

// fixed reads n bytes of fixed-length opaque data (n a multiple of 4).
func (r *xdrReader) fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	if r.pos+n > len(r.buf) {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	v := r.buf[r.pos : r.pos+n]
	r.pos += n
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
