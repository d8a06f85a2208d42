package nfs3

import (
	"errors"
	"io"
	"sync"
	"syscall"
)

// read answers READ (RFC 1813 section 3.3.6): positional I/O on the cached open file into
// a pooled buffer that the reply sends as is, after the results (oncrpc writes the RPC
// header, the attributes and the data with one writev).
func read(rq *request) error {
	fh := rq.handle()
	offset := rq.args.Uint64()
	count := rq.args.Uint32()
	if err := rq.decoded(); err != nil {
		return err
	}
	_, p, st, err := rq.statHandle(fh)
	if err == nil {
		err = readable(st)
	}
	var data []byte
	eof := false
	if err == nil {
		data, eof, err = rq.readAt(p, offset, min(count, TransferSize), st.Size)
	}
	if err == nil {
		st = rq.statOrNil(p)
	}
	rq.status(err)
	rq.postOpAttr(st)
	if err != nil {
		return nil
	}
	rq.res.Uint32(uint32(len(data)))
	rq.res.Bool(eof)
	rq.res.Uint32(uint32(len(data))) // the data's opaque length; the bytes follow in Data
	rq.reply.Data = data
	return nil
}

// readable: only regular files are read; a directory answers ISDIR, other types INVAL.
func readable(st *syscall.Stat_t) error {
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return nil
	case syscall.S_IFDIR:
		return syscall.EISDIR
	}
	return syscall.EINVAL
}

// readBuffers recycles READ's data buffers (TransferSize each).
var readBuffers = sync.Pool{New: func() any { b := make([]byte, TransferSize); return &b }}

// readAt reads up to count bytes at offset from the file at p, whose size was size when
// the call began; the buffer goes back to the pool when the reply has been written.
func (rq *request) readAt(p string, offset uint64, count uint32, size int64) ([]byte, bool, error) {
	if offset >= uint64(size) || count == 0 {
		return []byte{}, offset >= uint64(size), nil
	}
	f, err := rq.s.files.get(p, false)
	if err != nil {
		return nil, false, err
	}
	defer f.Release()
	bp := readBuffers.Get().(*[]byte)
	buf := (*bp)[:count]
	n, err := f.ReadAt(buf, int64(offset))
	eof := errors.Is(err, io.EOF)
	if err != nil && !eof {
		readBuffers.Put(bp)
		return nil, false, err
	}
	rq.reply.Release = func() { readBuffers.Put(bp) }
	return buf[:n], eof || offset+uint64(n) >= uint64(size), nil
}
