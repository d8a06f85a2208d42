package oncrpc

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// conn is one client's TCP connection.
type conn struct {
	srv  *Server
	nc   net.Conn
	rd   *bufio.Reader // nc's bytes: a small call and the next one's record mark in one read
	host string

	// slots holds a token per call being handled; its capacity is the bound.
	slots chan struct{}

	wmu sync.Mutex // whole reply records go out one at a time
	// wr is the writev of one reply, under wmu: kept so that a reply allocates neither
	// its record mark nor its vector.
	wr recordWriter

	// inlineTimer hands reading on when a call answered on the reading goroutine outlasts
	// inlineBudget; touched only by the goroutine reading the connection.
	// readerClaimed settles who reads next after such a call: the goroutine that answered
	// it or the timer's new one.
	inlineTimer   *time.Timer
	readerClaimed atomic.Bool

	mu      sync.Mutex          // guards calls and closed
	calls   map[uint32]struct{} // XIDs being handled, to drop retransmissions of them
	closed  bool
	workers sync.WaitGroup
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{srv: s, nc: nc, rd: bufio.NewReaderSize(nc, readBuffer), host: HostOf(nc.RemoteAddr()),
		slots: make(chan struct{}, MaxInFlight), calls: make(map[uint32]struct{})}
}

// readBuffer is how much of a connection is read ahead. Record bodies of a chunk or more
// bypass it and are read straight into record memory.
const readBuffer = 16 << 10

// HostOf is a client's name in logs and in MOUNT's DUMP list: its address, as there is
// no reverse lookup.
func HostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// serve reads calls until the client goes away or the server drains, or until reading
// has moved to another goroutine (handleInline), which then serves the connection.
func (c *conn) serve() {
	if !c.readCalls() {
		return
	}
	// Replies still being produced need the socket; close once they are out.
	c.workers.Wait()
	c.close()
}

// readCalls reads and dispatches calls; it reports false when reading moved to another
// goroutine, true when the connection ended.
func (c *conn) readCalls() bool {
	logger := c.srv.logger
	for {
		if c.srv.isDraining() {
			return true
		}
		buf, err := readRecord(c.rd, &c.srv.records)
		if err != nil {
			switch {
			case c.srv.isDraining():
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			case errors.Is(err, syscall.ECONNRESET):
				// Clients such as libnfs reset the connection instead of closing it.
				logger.Debug("connection reset by client", "client", c.host)
			default:
				logger.Error("reading a call", "client", c.host, "err", err)
			}
			return true
		}
		record := *buf
		call, proc, refusal, ok := c.srv.admit(record, c.nc.LocalAddr(), c.nc.RemoteAddr(), c.host)
		if !ok {
			c.srv.records.put(buf)
			// Without a parsable header there is no XID to answer.
			logger.Warn("malformed RPC record; closing the connection", "client", c.host, "bytes", len(record))
			return true
		}
		if refusal != nil {
			c.srv.records.put(buf)
			if err := c.write(nil, refusal); err != nil {
				return true
			}
			continue
		}
		if !c.track(call.XID) {
			// A retransmission of a call still being handled: the first answer satisfies
			// the client; handling it twice could answer twice or apply it twice.
			c.srv.records.put(buf)
			continue
		}
		if !c.srv.begin() {
			c.srv.records.put(buf)
			return true
		}
		call.buf = buf
		if proc.Exclusive {
			c.acquireAll()
			c.handle(call, proc)
			c.releaseAll()
			continue
		}
		c.slots <- struct{}{}
		c.workers.Add(1)
		if len(c.slots) == 1 && c.rd.Buffered() == 0 && (proc.Bulk == nil || !proc.Bulk(call)) {
			if !c.handleInline(call, proc) {
				return false
			}
			continue
		}
		go func() {
			defer c.workers.Done()
			defer func() { <-c.slots }()
			c.handle(call, proc)
		}()
	}
}

// inlineBudget is how long a call answered on the reading goroutine may take before
// reading moves to a new goroutine. A LOOKUP or GETATTR of a hot name takes tens of
// microseconds; a call past the budget is one the calls behind it must not wait for.
const inlineBudget = 100 * time.Microsecond

// handleInline answers a call that is alone on its connection (none in flight, none
// waiting in the read buffer: a client making one call at a time) on the reading
// goroutine. That saves waking a second thread per call, which the profile of a serial
// metadata workload showed costing more than the calls themselves. If the call outlasts
// inlineBudget, a new goroutine takes over reading, so a call that arrives meanwhile is
// not held up; handleInline then reports false and its caller stops reading. The caller
// has taken a slot and counted a worker for the call.
//
// One timer serves every inline call of the connection (a timer made per call cost 5% of
// the server's CPU in the toolchain profile). Only the goroutine reading the connection
// arms it. A firing that comes late, after its call ended, at worst hands reading on once
// more than needed.
func (c *conn) handleInline(call *Call, proc *Procedure) (keepReading bool) {
	c.readerClaimed.Store(false) // whoever claims it reads next: this goroutine or the timer's
	if c.inlineTimer == nil {
		c.inlineTimer = time.AfterFunc(inlineBudget, func() {
			if c.readerClaimed.CompareAndSwap(false, true) {
				go c.serve()
			}
		})
	} else {
		c.inlineTimer.Reset(inlineBudget)
	}
	c.handle(call, proc)
	<-c.slots
	c.workers.Done()
	if !c.readerClaimed.CompareAndSwap(false, true) {
		return false // the timer's goroutine reads now, and owns the timer
	}
	c.inlineTimer.Stop()
	return true
}

// track records xid as being handled; false when it already is.
func (c *conn) track(xid uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.calls[xid]; dup {
		return false
	}
	c.calls[xid] = struct{}{}
	return true
}

func (c *conn) acquireAll() {
	for range MaxInFlight {
		c.slots <- struct{}{}
	}
}

func (c *conn) releaseAll() {
	for range MaxInFlight {
		<-c.slots
	}
}

// handle runs one call's handler and writes its reply.
func (c *conn) handle(call *Call, proc *Procedure) {
	defer c.srv.inflight.Done()
	// The record's memory is reused once the reply is out: handlers copy what they keep.
	defer c.srv.records.put(call.buf)
	defer func() {
		c.mu.Lock()
		delete(c.calls, call.XID)
		c.mu.Unlock()
	}()
	parts, pipe, reply := c.srv.answer(call, proc)
	defer c.srv.replies.put(reply)
	if err := c.write(pipe, parts...); err != nil {
		c.close()
	}
}

// write sends one reply record: parts, then the pipe's data when there is a pipe.
func (c *conn) write(pipe *Pipe, parts ...[]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if pipe != nil {
		return c.wr.writeSpliced(c.nc, parts, pipe)
	}
	return c.wr.write(c.nc, parts)
}

// close ends the connection. Calls being handled finish, fail to write and count
// themselves out of flight.
func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.srv.forget(c)
	if err := c.nc.Close(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
		c.srv.logger.Debug("closing connection", "client", c.host, "err", err)
	}
	c.srv.logger.Debug("connection closed", "client", c.host)
}
