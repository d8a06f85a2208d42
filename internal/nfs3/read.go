package nfs3

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
)

// read answers READ (RFC 1813 section 3.3.6): the cached open file's pages spliced into
// a pipe by reference and from it into the socket (oncrpc, splice.go), or, for small
// reads and where splice is not to be had, positional I/O into a pooled buffer that the
// reply sends as is, after the results (oncrpc writes the RPC header, the attributes and
// the data with one writev).
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
	eof := false
	if err == nil {
		eof, st, err = rq.readAt(p, info, offset, min(count, TransferSize))
	}
	rq.status(err)
	rq.postOpAttr(st)
	if err != nil {
		return nil
	}
	n := uint32(rq.reply.DataLen())
	rq.res.Uint32(n)
	rq.res.Bool(eof)
	rq.res.Uint32(n) // the data's opaque length; the bytes follow in the reply's Data or Pipe
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

// spliceFrom is the smallest read spliced rather than copied: below it the copy costs
// less than the pipe's extra system call.
const spliceFrom = 64 << 10

// readAt reads up to count bytes at offset from the file at p, the object info describes,
// into the reply (its Pipe or its Data), and returns whether the data reaches the end of
// the file and the file's attributes after the read. The pipe or buffer goes back once
// the reply has been written.
func (rq *request) readAt(p string, info os.FileInfo, offset uint64, count uint32) (bool, *syscall.Stat_t, error) {
	pre := statOf(info)
	if offset >= uint64(pre.Size) || count == 0 {
		rq.reply.Data = []byte{}
		return offset >= uint64(pre.Size), pre, nil
	}
	f, checked, err := rq.s.files.get(p, false, info)
	if err != nil {
		return false, nil, err
	}
	// By the length the file has for the read, not the one asked for: a client reads
	// small files in calls of its largest transfer size too.
	if min(uint64(count), uint64(pre.Size)-offset) >= spliceFrom {
		if eof, post, ok, err := rq.spliceAt(f, pre.Ino, offset, count); ok {
			return eof, post, err // f released with the reply, or on error
		}
	}
	defer f.Release()
	// No more than the file holds, by the freshest size there is: asked for more, ReadAt
	// makes a second pread to find the end of the file.
	size, want := uint64(pre.Size), uint64(count)
	if checked != nil {
		size = uint64(checked.Size)
	}
	if offset < size {
		want = min(want, size-offset)
	}
	bp := readBuffers.Get().(*[]byte)
	buf := (*bp)[:want]
	n, err := f.ReadAt(buf, int64(offset))
	eof := errors.Is(err, io.EOF)
	if err != nil && !eof {
		readBuffers.Put(bp)
		return false, nil, err
	}
	rq.reply.Data = buf[:n]
	rq.reply.Release = func() { readBuffers.Put(bp) }
	var post *syscall.Stat_t
	if checked != nil && offset+uint64(n) <= uint64(checked.Size) {
		// A read changes no attribute the client caches (atime aside): the attributes
		// that checked the cached descriptor, taken just before the read, serve as the
		// post-op attributes, unless the file grew past them meanwhile.
		checked.Ino = pre.Ino
		post = checked
	} else {
		post = fileAttr(f, pre.Ino)
	}
	end := pre.Size
	if post != nil {
		end = post.Size
	}
	return eof || offset+uint64(n) >= uint64(end), post, nil
}

// spliceAt is readAt by reference: the file's pages at offset moved into a pipe the
// reply sends (oncrpc.Pipe). ok is false, with nothing done, when the read cannot be
// spliced (no pipe to be had, a range wider than a pipe, a layer file system without
// splice); readAt copies then. Once ok, f is released with the reply (or here, on error).
// The attributes are the fstat of the descriptor the pages come from, made just before
// they are moved; the data's length, and so the reply's, is known before anything is
// written, so a file that shrinks meanwhile answers a shorter read, never a torn record.
func (rq *request) spliceAt(f openFile, unionIno uint64, offset uint64, count uint32) (eof bool, post *syscall.Stat_t, ok bool, err error) {
	lf, has := f.layerFile()
	if !has {
		return false, nil, false, nil
	}
	fd := int(lf.Fd())
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return false, nil, false, nil
	}
	st.Ino = unionIno
	if offset >= uint64(st.Size) {
		return false, nil, false, nil // the file shrank meanwhile: readAt's copy answers
	}
	want := int(min(uint64(count), uint64(st.Size)-offset))
	if want < spliceFrom || !rq.s.pipes.Fits(int64(offset), want) {
		return false, nil, false, nil
	}
	pipe := rq.s.pipes.Get()
	if pipe == nil {
		return false, nil, false, nil
	}
	got, err := pipe.Fill(fd, int64(offset), want)
	if err != nil && got == 0 {
		pipe.Release()
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP) {
			return false, nil, false, nil // no splice from this file system
		}
		f.Release()
		return false, nil, true, err
	}
	rq.reply.Pipe = pipe
	rq.reply.Release = func() {
		pipe.Release()
		f.Release()
	}
	if err != nil {
		// Some data came before the error: a short read, the rest asked for again.
		return false, &st, true, nil
	}
	if got < want {
		// The file ended sooner than its fstat said: it shrank meanwhile.
		if again := fileAttr(f, unionIno); again != nil {
			return true, again, true, nil
		}
		return true, nil, true, nil
	}
	return offset+uint64(got) >= uint64(st.Size), &st, true, nil
}
