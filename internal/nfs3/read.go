package nfs3

import (
	"errors"
	"io"
	"os"
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
	_, p, info, err := rq.resolveInfo(fh)
	var st *syscall.Stat_t
	if err == nil {
		st = statOf(info)
		err = readable(st)
	}
	if err == nil {
		err = rq.who.mayRead(st)
	}
	var data []byte
	eof := false
	if err == nil {
		data, eof, st, err = rq.readAt(p, info, offset, min(count, TransferSize))
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

// readAt reads up to count bytes at offset from the file at p, the object info describes,
// and returns the data, whether it reaches the end of the file, and the file's attributes
// after the read. The buffer goes back to the pool once the reply has been written.
func (rq *request) readAt(p string, info os.FileInfo, offset uint64, count uint32) ([]byte, bool, *syscall.Stat_t, error) {
	pre := statOf(info)
	if offset >= uint64(pre.Size) || count == 0 {
		return []byte{}, offset >= uint64(pre.Size), pre, nil
	}
	f, checked, err := rq.s.files.get(p, false, info)
	if err != nil {
		return nil, false, nil, err
	}
	defer f.Release()
	bp := readBuffers.Get().(*[]byte)
	buf := (*bp)[:count]
	n, err := f.ReadAt(buf, int64(offset))
	eof := errors.Is(err, io.EOF)
	if err != nil && !eof {
		readBuffers.Put(bp)
		return nil, false, nil, err
	}
	rq.reply.Release = func() { readBuffers.Put(bp) }
	var post *syscall.Stat_t
	if checked != nil && offset+uint64(n) <= uint64(checked.Size) {
		// A read changes no attribute the client caches (atime aside): the fstat that
		// checked the cached descriptor, just before the read, serves as the post-op
		// attributes, unless the file grew past it meanwhile.
		checked.Ino = pre.Ino
		post = checked
	} else {
		post = fileAttr(f, pre.Ino)
	}
	size := pre.Size
	if post != nil {
		size = post.Size
	}
	return buf[:n], eof || offset+uint64(n) >= uint64(size), post, nil
}
