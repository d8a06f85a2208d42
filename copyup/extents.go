package copyup

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Extent is one extent of a file's map, as FIEMAP reports it.
type Extent struct {
	Logical, Physical, Length uint64
	// Shared: the blocks are shared with another file (a clone or reflink).
	Shared bool
}

// Extents returns the extent map of the file at path (FIEMAP, after syncing it), so
// that a copy can be checked to share its source's blocks: no data moved.
func Extents(path string) ([]Extent, error) {
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var all []Extent
	for start := uint64(0); ; {
		req := fiemapReq{Start: start, Length: ^uint64(0) - start, Flags: fiemapFlagSync}
		req.ExtentCount = uint32(len(req.Extents))
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFiemap, uintptr(unsafe.Pointer(&req))); e != 0 {
			return nil, fmt.Errorf("FIEMAP %s: %w", path, e)
		}
		got := req.Extents[:req.Mapped]
		for _, e := range got {
			all = append(all, Extent{Logical: e.Logical, Physical: e.Physical, Length: e.Length, Shared: e.Flags&fiemapExtentShared != 0})
		}
		if len(got) == 0 || got[len(got)-1].Flags&fiemapExtentLast != 0 {
			return all, nil
		}
		last := got[len(got)-1]
		start = last.Logical + last.Length
	}
}

// FIEMAP (linux/fiemap.h), which x/sys/unix lacks.
const (
	fsIocFiemap        = 0xc020660b // _IOWR('f', 11, struct fiemap)
	fiemapFlagSync     = 0x1
	fiemapExtentLast   = 0x1
	fiemapExtentShared = 0x2000
)

type fiemapExtent struct {
	Logical, Physical, Length uint64
	_                         [2]uint64
	Flags                     uint32
	_                         [3]uint32
}

type fiemapReq struct {
	Start, Length                 uint64
	Flags, Mapped, ExtentCount, _ uint32
	Extents                       [128]fiemapExtent
}
