package oncrpc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Reply data by reference. A READ's data copied into the server's memory (pread) and
// copied again into the socket (writev) is two copies of every byte served; splice(2)
// moves the file's page-cache pages into a pipe by reference and from the pipe into the
// socket, so the server copies none of them (Linux's own NFS server reads the same way).
// The file is read into the pipe while the handler runs, with no lock held; only the
// pipe-to-socket splice, which does no file I/O, runs under the connection's write lock.

// Pipe is one pipe holding a reply's data, from a Pipes pool.
type Pipe struct {
	pool *Pipes
	r, w int // read and write ends
	n    int // bytes in the pipe
}

// Pipes is a bounded pool of pipes sized for one reply's data each. A Pipes is safe for
// concurrent use; its mu is a leaf, held for the free list only (no system call under it
// but closing a pipe).
type Pipes struct {
	size  int // each pipe's capacity in bytes
	slots int // the capacity in pages: a fill spans at most this many pages
	max   int // pipes in use and idle at most

	mu     sync.Mutex
	free   []*Pipe // idle pipes, empty; guarded by mu
	made   int     // pipes open, in use or idle; guarded by mu
	closed bool    // guarded by mu
	// refused: the system does not give an unprivileged server pipes of size
	// (fs.pipe-max-size); no more are asked for. Guarded by mu.
	refused bool
}

// NewPipes returns a pool of at most max pipes of size bytes each. Pipes are made on
// demand; when none can be had (the pool is at max, the system refuses a pipe of that
// size) callers fall back to copying.
func NewPipes(size, max int) *Pipes {
	return &Pipes{size: size, slots: size / os.Getpagesize(), max: max}
}

// Get returns an empty pipe, or nil when none is to be had.
func (ps *Pipes) Get() *Pipe {
	ps.mu.Lock()
	if ps.closed || ps.refused || (len(ps.free) == 0 && ps.made >= ps.max) {
		ps.mu.Unlock()
		return nil
	}
	if n := len(ps.free); n > 0 {
		p := ps.free[n-1]
		ps.free = ps.free[:n-1]
		ps.mu.Unlock()
		return p
	}
	ps.made++
	ps.mu.Unlock()
	p, err := ps.open()
	if err != nil {
		ps.mu.Lock()
		ps.made--
		ps.refused = ps.refused || errors.Is(err, syscall.EPERM)
		ps.mu.Unlock()
		return nil
	}
	return p
}

func (ps *Pipes) open() (*Pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	got, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, ps.size)
	if err == nil && got < ps.size {
		err = fmt.Errorf("pipe of %d bytes, not %d", got, ps.size)
	}
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	return &Pipe{pool: ps, r: fds[0], w: fds[1]}, nil
}

// Close closes the idle pipes; pipes in use close when released.
func (ps *Pipes) Close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.closed = true
	for _, p := range ps.free {
		p.close()
	}
	ps.made -= len(ps.free)
	ps.free = nil
}

// Fits reports whether n bytes of a file at off fit one pipe: a pipe holds whole pages
// by reference, so an unaligned range takes a page more than its length.
func (ps *Pipes) Fits(off int64, n int) bool {
	page := int64(os.Getpagesize())
	first := off / page
	last := (off + int64(n) + page - 1) / page
	return last-first <= int64(ps.slots)
}

// Fill moves up to n bytes of the file fd at off into the empty pipe, by reference, and
// returns how many it moved: fewer than n only at the end of the file. The read may
// block on the file's disk, and runs with no lock held.
func (p *Pipe) Fill(fd int, off int64, n int) (int, error) {
	for p.n < n {
		m, err := unix.Splice(fd, &off, p.w, nil, n-p.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return p.n, err
		}
		if m == 0 {
			break // the end of the file
		}
		p.n += int(m)
	}
	return p.n, nil
}

// Len is the number of bytes in the pipe.
func (p *Pipe) Len() int { return p.n }

// Release gives the pipe back once its reply is written: drained, it is reused; a pipe
// still holding bytes (a write that failed) is closed.
func (p *Pipe) Release() {
	ps := p.pool
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p.n != 0 || ps.closed {
		p.close()
		ps.made--
		return
	}
	ps.free = append(ps.free, p)
}

func (p *Pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// readAll reads the pipe's bytes into memory: for a datagram, and for a connection that
// cannot splice.
func (p *Pipe) readAll() ([]byte, error) {
	b := make([]byte, p.n)
	for got := 0; got < len(b); {
		m, err := unix.Read(p.r, b[got:])
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return nil, fmt.Errorf("pipe drained at %d of %d bytes", got, len(b))
		}
		got += m
		p.n -= m
	}
	return b, nil
}

// writeSpliced writes a record of parts followed by the pipe's bytes and their padding:
// the record mark and parts with sendmsg(MSG_MORE), so that they leave with the data, the
// data spliced from the pipe into the socket. A connection that is not a socket (or
// refuses splice) gets the bytes copied instead.
func (rw *recordWriter) writeSpliced(nc net.Conn, parts [][]byte, p *Pipe) error {
	n := p.n
	for _, part := range parts {
		n += len(part)
	}
	pad := xdr.Padding(p.n)
	n += len(pad)
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return rw.writeCopied(nc, parts, p)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return rw.writeCopied(nc, parts, p)
	}
	rw.setMark(n)
	head := append(append(rw.room[:0], rw.mark[:]), parts...)
	defer clear(rw.room[:])
	var ioErr error
	spliced := false
	werr := raw.Write(func(fd uintptr) bool {
		for len(head) > 0 {
			m, err := unix.SendmsgBuffers(int(fd), head, nil, nil, unix.MSG_MORE)
			switch {
			case err == syscall.EAGAIN:
				return false
			case err == syscall.EINTR:
				continue
			case err != nil:
				ioErr = err
				return true
			}
			head = consume(head, m)
		}
		for p.n > 0 {
			flags := unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
			if len(pad) > 0 {
				flags |= unix.SPLICE_F_MORE
			}
			m, err := unix.Splice(p.r, nil, int(fd), nil, p.n, flags)
			switch {
			case err == syscall.EAGAIN:
				return false
			case err == syscall.EINTR:
				continue
			case err == syscall.EINVAL && !spliced:
				// This socket does not take spliced pages: copy the data below.
				return true
			case err != nil:
				ioErr = err
				return true
			}
			spliced = true
			p.n -= int(m)
		}
		for len(pad) > 0 {
			m, err := unix.Write(int(fd), pad)
			switch {
			case err == syscall.EAGAIN:
				return false
			case err == syscall.EINTR:
				continue
			case err != nil:
				ioErr = err
				return true
			}
			pad = pad[m:]
		}
		return true
	})
	if werr != nil {
		return werr
	}
	if ioErr != nil {
		return ioErr
	}
	if p.n > 0 { // the socket refused splice before the first byte of data
		b, err := p.readAll()
		if err != nil {
			return err
		}
		_, err = (&net.Buffers{b, pad}).WriteTo(nc)
		return err
	}
	return nil
}

// writeCopied is writeSpliced for a connection that is no socket.
func (rw *recordWriter) writeCopied(nc net.Conn, parts [][]byte, p *Pipe) error {
	b, err := p.readAll()
	if err != nil {
		return err
	}
	return rw.write(nc, append(parts, b, xdr.Padding(len(b))))
}

// consume drops the first n bytes of bufs.
func consume(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}
