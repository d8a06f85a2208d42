package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
)

// The front end sits between the listener and go-nfs. It reads whole ONC RPC records from
// each client (reassembling fragments, which go-nfs cannot), hands them to go-nfs one at a
// time, and sees every reply on its way out. That position lets it
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

	procRemove = 12
	procRmdir  = 13
	procRename = 14
	procLink   = 15

	lastFragment = 1 << 31

	// maxRecordSize refuses absurd records before allocating for them. go-nfs advertises
	// 1 GiB transfer sizes; real clients cap at 1 MiB per READ/WRITE.
	maxRecordSize = 64 << 20

	nfsStatusOK = 0
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

// frontEnd owns the connections of one server.
type frontEnd struct {
	logger  *slog.Logger
	handler nfs.Handler // decodes handles for the calls the front end repairs
	errnos  *errnoRecorder
	mounts  *mountTable

	mu       sync.Mutex
	conns    map[*frontConn]struct{}
	draining bool
	inflight sync.WaitGroup
}

func newFrontEnd(logger *slog.Logger, handler nfs.Handler, errnos *errnoRecorder) *frontEnd {
	return &frontEnd{logger: logger, handler: handler, errnos: errnos, mounts: newMountTable(),
		conns: make(map[*frontConn]struct{})}
}

// frontListener hands go-nfs wrapped connections.
type frontListener struct {
	net.Listener
	fe *frontEnd
}

func (fe *frontEnd) listener(l net.Listener) net.Listener { return &frontListener{Listener: l, fe: fe} }

func (l *frontListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &frontConn{Conn: c, fe: l.fe, calls: make(map[uint32]*pendingCall)}
	l.fe.mu.Lock()
	if l.fe.draining {
		l.fe.mu.Unlock()
		c.Close()
		return nil, net.ErrClosed
	}
	l.fe.conns[fc] = struct{}{}
	l.fe.mu.Unlock()
	l.fe.logger.Debug("connection opened", "client", c.RemoteAddr().String())
	return fc, nil
}

// shutdown stops reading new requests on every connection, waits (bounded by ctx) for the
// replies of requests already read, then closes the connections.
func (fe *frontEnd) shutdown(ctx context.Context) error {
	fe.mu.Lock()
	fe.draining = true
	conns := make([]*frontConn, 0, len(fe.conns))
	for c := range fe.conns {
		conns = append(conns, c)
	}
	fe.mu.Unlock()

	// Wake readers blocked waiting for a next request; they see draining and report EOF.
	for _, c := range conns {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
	done := make(chan struct{})
	go func() {
		fe.inflight.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("requests still in flight: %w", ctx.Err())
	}
	for _, c := range conns {
		c.Close()
	}
	return err
}

// pendingCall is what the front end remembers about a request until its reply passes.
type pendingCall struct {
	prog, proc uint32
	started    time.Time
	errnoKey   *errnoKey // set for calls whose failure status is repaired
	isLink     bool      // the reply needs go-nfs's LINK layout turned into LINK3res
	mountDir   string    // MNT: the directory asked for, entered in the DUMP list on success
}

type frontConn struct {
	net.Conn
	fe *frontEnd

	// read side, used only by go-nfs's reader goroutine
	pending []byte // the current request record, with its record mark, not yet read by go-nfs

	// write side, used only by go-nfs's writer goroutine
	out []byte // reply bytes received from go-nfs, not yet a whole record

	wmu sync.Mutex // serialises whole records on Conn: go-nfs's replies and the front end's own

	mu     sync.Mutex
	calls  map[uint32]*pendingCall // by xid
	closed bool
}

func (c *frontConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		if err := c.nextRequest(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// nextRequest reads the next whole request record and queues it for go-nfs.
func (c *frontConn) nextRequest() error {
	for {
		if c.fe.isDraining() {
			c.awaitReplies()
			return io.EOF
		}
		record, err := c.readRecord()
		if err != nil {
			if c.fe.isDraining() {
				c.awaitReplies()
				return io.EOF
			}
			// go-nfs closes the connection on EOF only; close it here for every error so
			// no socket outlives its reader.
			c.Close()
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return io.EOF
			}
			if errors.Is(err, syscall.ECONNRESET) {
				// Clients such as libnfs reset the connection instead of closing it.
				c.fe.logger.Debug("connection reset by client", "client", c.RemoteAddr().String())
				return io.EOF
			}
			c.fe.logger.Error("reading request", "client", c.RemoteAddr().String(), "err", err)
			return err
		}
		if h, ok := parseCallHeader(record); ok {
			if reply := c.fe.localReply(h, record, hostOf(c.RemoteAddr())); reply != nil {
				c.fe.logger.Debug("rpc answered by the front end", "xid", h.xid, "prog", h.prog,
					"vers", h.vers, "proc", h.proc, "reply", describeReply(reply))
				if err := c.writeRecord(reply); err != nil {
					c.Close()
					return io.EOF
				}
				continue
			}
		}
		call, record, ok := c.inspectCall(record)
		if !ok {
			// Not a call we can parse: let go-nfs judge it (it answers garbage args or
			// closes the connection), but do not count it in flight.
			c.pending = withRecordMark(record)
			return nil
		}
		c.fe.mu.Lock()
		if c.fe.draining {
			c.fe.mu.Unlock()
			return io.EOF
		}
		c.fe.inflight.Add(1)
		c.fe.mu.Unlock()

		xid := binary.BigEndian.Uint32(record)
		c.mu.Lock()
		if old, dup := c.calls[xid]; dup && old != nil {
			// A retransmission of a call still being handled: go-nfs would answer twice;
			// the first answer satisfies the client, so drop this copy.
			c.mu.Unlock()
			c.fe.inflight.Done()
			continue
		}
		c.calls[xid] = call
		c.mu.Unlock()
		c.pending = withRecordMark(record)
		return nil
	}
}

func (fe *frontEnd) isDraining() bool {
	fe.mu.Lock()
	defer fe.mu.Unlock()
	return fe.draining
}

// awaitReplies waits until go-nfs has written the replies of every request this
// connection read. go-nfs closes the connection as soon as a read reports EOF, while its
// writer may still hold the last reply; waiting here keeps that reply.
func (c *frontConn) awaitReplies() {
	deadline := time.Now().Add(replyDrainTimeout)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n := len(c.calls)
		c.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// replyDrainTimeout bounds how long a draining connection waits for go-nfs's last replies.
const replyDrainTimeout = 30 * time.Second

// readRecord reads one RPC record, joining its fragments.
func (c *frontConn) readRecord() ([]byte, error) {
	var record []byte
	var mark [4]byte
	for {
		if _, err := io.ReadFull(c.Conn, mark[:]); err != nil {
			if len(record) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		m := binary.BigEndian.Uint32(mark[:])
		size := int(m &^ lastFragment)
		if len(record)+size > maxRecordSize {
			return nil, fmt.Errorf("request record over %d bytes", maxRecordSize)
		}
		start := len(record)
		record = append(record, make([]byte, size)...)
		if _, err := io.ReadFull(c.Conn, record[start:]); err != nil {
			return nil, err
		}
		if m&lastFragment != 0 {
			return record, nil
		}
	}
}

func withRecordMark(record []byte) []byte {
	out := make([]byte, 4+len(record))
	binary.BigEndian.PutUint32(out, uint32(len(record))|lastFragment)
	copy(out[4:], record)
	return out
}

// inspectCall parses a call record's header and, for the calls the front end repairs,
// their arguments. It returns the (possibly rewritten) record.
func (c *frontConn) inspectCall(record []byte) (*pendingCall, []byte, bool) {
	h, ok := parseCallHeader(record)
	if !ok {
		return nil, record, false
	}
	call := &pendingCall{prog: h.prog, proc: h.proc, started: time.Now()}
	r := xdrReader{buf: record, pos: h.argsAt}
	if h.prog == progMount && h.proc == mountProcMnt {
		if dir := r.opaque(); r.err == nil {
			call.mountDir = string(dir)
		}
		return call, record, true
	}
	if h.prog != progNFS || h.vers != 3 {
		return call, record, true
	}
	argsAt := h.argsAt
	switch h.proc {
	case procRemove, procRmdir:
		dir, name := r.opaque(), r.opaque()
		if path, ok := c.childPath(dir, name, r.err); ok {
			call.errnoKey = &errnoKey{op: "remove", from: path}
		}
	case procRename:
		fromDir, fromName := r.opaque(), r.opaque()
		toDir, toName := r.opaque(), r.opaque()
		from, ok1 := c.childPath(fromDir, fromName, r.err)
		to, ok2 := c.childPath(toDir, toName, r.err)
		if ok1 && ok2 {
			call.errnoKey = &errnoKey{op: "rename", from: from, to: to}
		}
	case procLink:
		file, dir, name := r.opaque(), r.opaque(), r.opaque()
		if r.err != nil {
			return call, record, true
		}
		call.isLink = true
		record = c.rewriteLinkCall(record[:argsAt], file, dir, name, call)
	}
	return call, record, true
}

// childPath is the union path go-nfs will compute for name inside the directory handle dir.
func (c *frontConn) childPath(dir, name []byte, parseErr error) (string, bool) {
	if parseErr != nil {
		return "", false
	}
	f, path, err := c.fe.handler.FromHandle(dir)
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
func (c *frontConn) rewriteLinkCall(header, file, dir, name []byte, call *pendingCall) []byte {
	var w xdrWriter
	w.buf = append(w.buf, header...)
	f, filePath, err := c.fe.handler.FromHandle(file)
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
	if newPath, ok := c.childPath(dir, name, nil); ok {
		call.errnoKey = &errnoKey{op: "link", from: target, to: newPath}
	}
	return w.buf
}

func (c *frontConn) Write(p []byte) (int, error) {
	c.out = append(c.out, p...)
	for len(c.out) >= 4 {
		m := binary.BigEndian.Uint32(c.out)
		size := int(m &^ lastFragment)
		if len(c.out) < 4+size {
			break
		}
		// go-nfs writes every reply as one last fragment.
		record := c.out[4 : 4+size]
		reply := c.finishReply(record)
		c.out = c.out[4+size:]
		if reply == nil {
			continue
		}
		if err := c.writeRecord(reply); err != nil {
			return 0, err
		}
	}
	if len(c.out) == 0 {
		c.out = nil // do not pin a large reply's buffer
	}
	return len(p), nil
}

func (c *frontConn) writeRecord(record []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.Conn.Write(withRecordMark(record))
	return err
}

// finishReply repairs and traces one reply record; nil drops it (go-nfs writes an empty
// record when a connection's context ends mid-request).
func (c *frontConn) finishReply(record []byte) []byte {
	if len(record) < 8 {
		return nil
	}
	fixAcceptStat(record)
	xid := binary.BigEndian.Uint32(record)
	c.mu.Lock()
	call := c.calls[xid]
	delete(c.calls, xid)
	c.mu.Unlock()
	if call == nil {
		return record
	}
	defer c.fe.inflight.Done()

	statusAt, ok := replyResultOffset(record)
	if ok && call.prog == progMount && call.proc == mountProcMnt && statusAt+4 <= len(record) &&
		binary.BigEndian.Uint32(record[statusAt:]) == 0 {
		c.fe.mounts.add(hostOf(c.RemoteAddr()), call.mountDir)
	}
	status := uint32(0)
	hasStatus := ok && call.prog == progNFS && call.proc != 0 && statusAt+4 <= len(record)
	if hasStatus {
		status = binary.BigEndian.Uint32(record[statusAt:])
		if call.errnoKey != nil {
			if errno := c.fe.errnos.take(*call.errnoKey); errno != 0 && status != nfsStatusOK {
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
	}
	if c.fe.logger.Enabled(context.Background(), slog.LevelDebug) {
		attrs := []any{"xid", xid, "call", procName(call.prog, call.proc), "us", time.Since(call.started).Microseconds()}
		if hasStatus {
			attrs = append(attrs, "status", status)
		}
		c.fe.logger.Debug("rpc", attrs...)
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

func (c *frontConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	// Requests read but never answered are no longer in flight.
	abandoned := len(c.calls)
	clear(c.calls)
	c.mu.Unlock()
	for range abandoned {
		c.fe.inflight.Done()
	}
	c.fe.mu.Lock()
	delete(c.fe.conns, c)
	c.fe.mu.Unlock()
	err := c.Conn.Close()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		err = nil
	}
	c.fe.logger.Debug("connection closed", "client", c.RemoteAddr().String())
	return err
}
