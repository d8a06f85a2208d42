package copyup

import (
	"golang.org/x/sys/unix"
)

// Method is how a copy-up copied a regular file's data, from fastest to
// slowest; the package comment says when each is used.
type Method int

const (
	// MethodClone shares the source's extents with the copy (FICLONE):
	// no data moves, whatever the size.
	MethodClone Method = iota
	// MethodCopyRange copies each data extent in the kernel
	// (copy_file_range), skipping holes.
	MethodCopyRange
	// MethodReadWrite copies each data extent through a buffer (pread and
	// pwrite), skipping holes.
	MethodReadWrite
	// MethodNoData is reported when the source held no data (empty, or
	// holes only) and could not be cloned: only its size was set.
	MethodNoData
)

func (m Method) String() string {
	switch m {
	case MethodClone:
		return "FICLONE"
	case MethodCopyRange:
		return "copy_file_range"
	case MethodReadWrite:
		return "read/write"
	case MethodNoData:
		return "no data"
	}
	return "unknown"
}

// copyChunk bounds one copy_file_range call, so a huge extent is copied in
// pieces the kernel accepts (it caps a call near 2 GiB anyway).
const copyChunk = 1 << 30

// rwBufSize is the buffer of the read/write fallback.
const rwBufSize = 1 << 20

// unsupported reports whether err from FICLONE or copy_file_range means
// "not here" (other filesystems, a filesystem or kernel without the call, a
// range it refuses) rather than a failure of the copy itself, so the next
// method should be tried. Errors such as EIO, ENOSPC or EDQUOT fail the
// copy-up instead: the slower methods would meet them as well.
func unsupported(err error) bool {
	switch err {
	case unix.EXDEV, unix.EOPNOTSUPP, unix.ENOSYS, unix.EINVAL, unix.ENOTTY:
		return true
	}
	return false
}

// copyContents copies all of in's data into the empty file out, starting
// with c.first, and answers the slowest method that copied data. The copy is
// of the source's size when it starts (lower layers do not change under a
// union, as with the kernel's overlay); holes stay holes.
func (c *Copier) copyContents(in, out int) (Method, error) {
	m := c.first
	if m == MethodClone {
		err := retryEINTR(func() error { return unix.IoctlFileClone(out, in) })
		if err == nil {
			return MethodClone, nil
		}
		if !unsupported(err) {
			return m, err
		}
		m = MethodCopyRange
	}
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Fstat(in, &st) }); err != nil {
		return m, err
	}
	size := st.Size
	chunk := int64(copyChunk)
	if c.rangeChunk > 0 {
		chunk = c.rangeChunk
	}
	moved := false
	var buf []byte // the read/write fallback's, allocated on first use
	for pos := int64(0); pos < size; {
		data, hole, err := nextExtent(in, pos, size)
		if err != nil {
			return m, err
		}
		if hole <= pos {
			break // no progress: the source changed under the copy
		}
		off := data
		for off < hole {
			if m == MethodCopyRange {
				roff, woff := off, off
				n, err := unix.CopyFileRange(in, &roff, out, &woff, int(min(hole-off, chunk)), 0)
				switch {
				case err == unix.EINTR:
				case err != nil && unsupported(err), err == nil && n == 0:
					// Not here (or nothing copied, as some filesystems
					// answer): the rest goes through a buffer, which also
					// tells a source that shrank.
					m = MethodReadWrite
				case err != nil:
					return m, err
				default:
					off += int64(n)
					moved = true
				}
				continue
			}
			if buf == nil {
				buf = make([]byte, rwBufSize)
			}
			n, err := readWrite(in, out, off, hole, buf)
			off += n
			moved = moved || n > 0
			if err != nil {
				return m, err
			}
			if n == 0 {
				size = off // the source ended early: it shrank
				break
			}
		}
		pos = hole
	}
	// Holes at the end, or a source of only holes, left out shorter than
	// the source: give it the source's size (it stays sparse).
	if !moved {
		m = MethodNoData
	}
	return m, retryEINTR(func() error { return unix.Ftruncate(out, size) })
}

// nextExtent answers the first data extent [data, hole) at or after pos in
// a file of size bytes, clipped to size; data == hole == size when only
// holes follow. A filesystem without SEEK_DATA counts as all data.
func nextExtent(fd int, pos, size int64) (data, hole int64, err error) {
	data, err = unix.Seek(fd, pos, unix.SEEK_DATA)
	switch {
	case err == unix.ENXIO:
		return size, size, nil
	case err == unix.EINVAL || err == unix.EOPNOTSUPP:
		return pos, size, nil
	case err != nil:
		return 0, 0, err
	}
	data = min(max(data, pos), size)
	hole, err = unix.Seek(fd, data, unix.SEEK_HOLE)
	switch {
	case err == unix.ENXIO: // the file shrank in between
		return size, size, nil
	case err != nil:
		return 0, 0, err
	}
	return data, min(max(hole, data), size), nil
}

// readWrite copies in's bytes [off, end) to the same offsets in out through
// buf, and answers how many it copied; fewer without an error means in
// ended early.
func readWrite(in, out int, off, end int64, buf []byte) (int64, error) {
	start := off
	for off < end {
		b := buf[:min(int64(len(buf)), end-off)]
		n, err := unix.Pread(in, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return off - start, err
		}
		if n == 0 {
			break
		}
		for w := 0; w < n; {
			k, err := unix.Pwrite(out, b[w:n], off+int64(w))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return off + int64(w) - start, err
			}
			w += k
		}
		off += int64(n)
	}
	return off - start, nil
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
