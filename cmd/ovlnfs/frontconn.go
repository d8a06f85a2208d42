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

	nfs "github.com/willscott/go-nfs"
)

// Connections and concurrency.
//
// go-nfs serves the requests of one connection strictly one after the other, and Linux and
// macOS put a whole mount on one connection: one slow request (a big copy-up, a large
// READ) would stall every LOOKUP behind it. So go-nfs never sees the clients' sockets. The
// front end reads each client connection itself and spreads its requests over a small pool
// of in-memory connections (net.Pipe) to go-nfs, each carrying one request at a time; a
// reply is written back to the client as soon as it is ready, in whatever order the
// requests finish (clients match replies by XID, RFC 5531 section 8).

// maxInFlight bounds the requests of one client connection being handled at once. It is
// also the number of go-nfs connections a client connection can grow to. When all are
// busy the front end stops reading that client, so TCP pushes back.
const maxInFlight = 32

// frontEnd owns the connections of one server.
type frontEnd struct {
	logger  *slog.Logger
	handler nfs.Handler // decodes handles for the calls the front end repairs
	errnos  *errnoRecorder
	mounts  *mountTable
	syncer  syncer   // makes WRITE and COMMIT data durable before their replies
	fs      unionOps // what the front end's own NFS procedures call
	fsid    uint64   // the export's fsid in the attributes the front end writes
	// asCaller, when set, gives the union as a caller sees it (objects it creates are
	// its own); set when the server runs as root and so can give objects away.
	asCaller func(caller) unionOps
	readOnly bool // no upper layer: ACCESS grants no change
	// dirs and entryHandles, when set, let the front end answer READDIR and READDIRPLUS
	// itself (readdir.go).
	dirs         dirSource
	entryHandles listingHandles
	files        *openFiles    // go-nfs's READ/WRITE opens, to drop on REMOVE/RMDIR/RENAME
	pl           *pipeListener // set by listen

	mu       sync.Mutex
	conns    map[*clientConn]struct{}
	draining bool
	inflight sync.WaitGroup
}

func newFrontEnd(logger *slog.Logger, handler nfs.Handler, errnos *errnoRecorder, sync syncer, fs unionOps, fsid uint64) *frontEnd {
	return &frontEnd{logger: logger, handler: handler, errnos: errnos, mounts: newMountTable(), syncer: sync,
		fs: fs, fsid: fsid, conns: make(map[*clientConn]struct{})}
}

// pipeListener is the listener go-nfs serves: its connections are the in-memory pipes
// the front end opens. It closes when the front end has shut down, which ends go-nfs's
// Serve.
type pipeListener struct {
	addr      net.Addr
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return l.addr }

// listen starts accepting clients on l. It returns the listener to hand go-nfs's Serve
// and a channel that reports why accepting stopped (l was closed, or failed).
func (fe *frontEnd) listen(l net.Listener) (net.Listener, <-chan error) {
	fe.pl = &pipeListener{addr: l.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				acceptErr <- err
				return
			}
			cc := &clientConn{conn: c, fe: fe, pl: fe.pl, host: hostOf(c.RemoteAddr()),
				slots: make(chan struct{}, maxInFlight), calls: make(map[uint32]struct{})}
			fe.mu.Lock()
			if fe.draining {
				fe.mu.Unlock()
				c.Close()
				continue
			}
			fe.conns[cc] = struct{}{}
			fe.mu.Unlock()
			fe.logger.Debug("connection opened", "client", c.RemoteAddr().String())
			go cc.serve()
		}
	}()
	return fe.pl, acceptErr
}

// shutdown stops reading new requests on every connection, waits (bounded by ctx) for the
// replies of requests already read, then closes the connections.
func (fe *frontEnd) shutdown(ctx context.Context) error {
	fe.mu.Lock()
	fe.draining = true
	conns := make([]*clientConn, 0, len(fe.conns))
	for c := range fe.conns {
		conns = append(conns, c)
	}
	fe.mu.Unlock()

	// Wake readers blocked waiting for a next request; they see draining and stop.
	for _, c := range conns {
		_ = c.conn.SetReadDeadline(time.Now())
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
		c.close()
	}
	if fe.pl != nil {
		fe.pl.Close()
	}
	return err
}

// begin counts a request in flight unless the server is draining.
func (fe *frontEnd) begin() bool {
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if fe.draining {
		return false
	}
	fe.inflight.Add(1)
	return true
}

func (fe *frontEnd) isDraining() bool {
	fe.mu.Lock()
	defer fe.mu.Unlock()
	return fe.draining
}

// clientConn is one client's TCP connection.
type clientConn struct {
	conn net.Conn
	fe   *frontEnd
	pl   *pipeListener
	host string

	// slots holds a token per request being handled; its capacity is the bound.
	slots chan struct{}

	wmu sync.Mutex // whole reply records go out one at a time

	mu      sync.Mutex
	calls   map[uint32]struct{} // XIDs being handled, to drop retransmissions of them
	idle    []*backend          // go-nfs connections with no request on them
	backs   []*backend          // all of them, closed with the client connection
	closed  bool
	workers sync.WaitGroup
}

// backend is one in-memory connection to go-nfs.
type backend struct {
	conn net.Conn // the front end's end of the pipe
}

// pipeEnd is go-nfs's end of a pipe, reporting the client's addresses so go-nfs's Mount
// sees who is mounting.
type pipeEnd struct {
	net.Conn
	local, remote net.Addr
}

func (p *pipeEnd) LocalAddr() net.Addr  { return p.local }
func (p *pipeEnd) RemoteAddr() net.Addr { return p.remote }

// serve reads requests until the client goes away or the server drains.
func (c *clientConn) serve() {
	defer func() {
		// Replies still being produced need the socket; close once they are out.
		c.workers.Wait()
		c.close()
	}()
	for {
		if c.fe.isDraining() {
			return
		}
		record, err := readRecord(c.conn)
		if err != nil {
			switch {
			case c.fe.isDraining():
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			case errors.Is(err, syscall.ECONNRESET):
				// Clients such as libnfs reset the connection instead of closing it.
				c.fe.logger.Debug("connection reset by client", "client", c.host)
			default:
				c.fe.logger.Error("reading request", "client", c.host, "err", err)
			}
			return
		}
		h, ok := parseCallHeader(record)
		if !ok {
			// Without a parsable header there is no XID to answer; go-nfs closed the
			// connection on such records as well.
			c.fe.logger.Warn("malformed RPC record; closing the connection", "client", c.host, "bytes", len(record))
			return
		}
		if reply := c.fe.localReply(h, record, c.host); reply != nil {
			c.fe.logger.Debug("rpc answered by the front end", "xid", h.xid, "prog", h.prog,
				"vers", h.vers, "proc", h.proc, "reply", describeReply(reply))
			if err := c.writeRecord(reply); err != nil {
				return
			}
			continue
		}
		c.mu.Lock()
		_, dup := c.calls[h.xid]
		if !dup {
			c.calls[h.xid] = struct{}{}
		}
		c.mu.Unlock()
		if dup {
			// A retransmission of a call still being handled: the first answer satisfies
			// the client; handling it twice could answer twice or apply it twice.
			continue
		}
		call := c.fe.inspectCall(h, record)
		if !c.fe.begin() {
			return
		}
		if h.prog == progMount {
			// MOUNT calls are rare and change what the export means to this client; run
			// them alone, after everything read before them and before anything read after.
			c.acquireAll()
			c.handle(call, record)
			c.releaseAll()
			continue
		}
		c.slots <- struct{}{}
		c.workers.Add(1)
		go func() {
			defer c.workers.Done()
			defer func() { <-c.slots }()
			c.handle(call, record)
		}()
	}
}

func (c *clientConn) acquireAll() {
	for range maxInFlight {
		c.slots <- struct{}{}
	}
}

func (c *clientConn) releaseAll() {
	for range maxInFlight {
		<-c.slots
	}
}

// handle passes one request to go-nfs and its reply, repaired, to the client.
func (c *clientConn) handle(call *pendingCall, record []byte) {
	defer c.fe.inflight.Done()
	defer func() {
		c.mu.Lock()
		delete(c.calls, call.xid)
		c.mu.Unlock()
	}()
	if call.local {
		reply := c.fe.finishReply(call, c.fe.serveLocal(call, record), c.host)
		if err := c.writeRecord(reply); err != nil {
			c.close()
		}
		return
	}
	b, err := c.backend()
	if err != nil {
		c.fe.logger.Error("no connection to go-nfs", "client", c.host, "err", err)
		c.close()
		return
	}
	reply, err := b.roundTrip(record)
	if err != nil {
		// go-nfs gave up on the request (it closes its connection when a record does not
		// parse). The client gets no reply to retransmit against, so end its connection as
		// go-nfs would have.
		c.fe.logger.Warn("go-nfs dropped a request; closing the connection", "client", c.host,
			"call", procName(call.prog, call.proc), "err", err)
		b.conn.Close()
		c.close()
		return
	}
	c.putIdle(b)
	if reply = c.fe.finishReply(call, reply, c.host); reply == nil {
		return
	}
	if err := c.writeRecord(reply); err != nil {
		c.close()
	}
}

// backend returns an idle go-nfs connection, opening one if none is idle. At most
// maxInFlight are busy at once (slots), so at most that many exist.
func (c *clientConn) backend() (*backend, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, net.ErrClosed
	}
	if n := len(c.idle); n > 0 {
		b := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return b, nil
	}
	mine, theirs := net.Pipe()
	b := &backend{conn: mine}
	c.backs = append(c.backs, b)
	c.mu.Unlock()
	select {
	case c.pl.conns <- &pipeEnd{Conn: theirs, local: c.conn.LocalAddr(), remote: c.conn.RemoteAddr()}:
		return b, nil
	case <-c.pl.done:
		return nil, net.ErrClosed
	}
}

func (c *clientConn) putIdle(b *backend) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.idle = append(c.idle, b)
}

// roundTrip sends one request record to go-nfs and reads its reply record.
func (b *backend) roundTrip(record []byte) ([]byte, error) {
	// The reply comes only after go-nfs has read the whole request, so writing first and
	// then reading cannot deadlock on the unbuffered pipe.
	if _, err := b.conn.Write(withRecordMark(record)); err != nil {
		return nil, err
	}
	for {
		reply, err := readRecord(b.conn)
		if err != nil {
			return nil, err
		}
		// go-nfs writes an empty record when its connection context ends mid-request.
		if len(reply) >= 8 {
			return reply, nil
		}
	}
}

func (c *clientConn) writeRecord(record []byte) error {
	var mark [4]byte
	binary.BigEndian.PutUint32(mark[:], uint32(len(record))|lastFragment)
	bufs := net.Buffers{mark[:], record} // writev: a 1 MiB READ reply is not copied again
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := bufs.WriteTo(c.conn)
	return err
}

// close ends the client connection and its go-nfs connections. Requests being handled
// finish against closed pipes and count themselves out of flight.
func (c *clientConn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	backs := c.backs
	c.backs, c.idle = nil, nil
	c.mu.Unlock()
	for _, b := range backs {
		b.conn.Close()
	}
	c.fe.mu.Lock()
	delete(c.fe.conns, c)
	c.fe.mu.Unlock()
	if err := c.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
		c.fe.logger.Debug("closing connection", "client", c.host, "err", err)
	}
	c.fe.logger.Debug("connection closed", "client", c.host)
}

// readRecord reads one RPC record, joining its fragments.
func readRecord(r io.Reader) ([]byte, error) {
	var record []byte
	var mark [4]byte
	for {
		if _, err := io.ReadFull(r, mark[:]); err != nil {
			if len(record) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		m := binary.BigEndian.Uint32(mark[:])
		size := int(m &^ lastFragment)
		if len(record)+size > maxRecordSize {
			return nil, fmt.Errorf("record over %d bytes", maxRecordSize)
		}
		start := len(record)
		record = append(record, make([]byte, size)...)
		if _, err := io.ReadFull(r, record[start:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
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
