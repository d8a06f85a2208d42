// Package copyup builds upper-layer objects in the union's work directory and
// moves them into place atomically: full copies of lower objects (copy-up),
// and the whiteouts and new objects the union creates. Whatever is being
// built stays invisible in the upper layer until a single rename makes it
// appear whole, so a crash never leaves half a change visible.
//
// Lock order: this package holds Copier.mu only to register and look up
// in-flight copy-ups, never across I/O. Building a copy (the long part: data
// copying and fsync) runs with no lock at all; the caller's place callback
// takes whatever directory lock the caller needs for the final rename, and
// must re-check, under that lock, that the destination is still what it
// expects: holding a directory lock across a copy-up's data copying would
// stall every change in that directory behind one large file.
//
// A regular file's data is copied by the first of these that works, and
// the copy is fsynced before it is placed, whichever was used (the kernel's
// overlay skips that fsync after a whole-file clone; this package keeps it
// whatever the filesystem). Like the kernel overlay's copy-up, a clone is
// tried first and holes are skipped:
//
//   - FICLONE (MethodClone): the copy shares the source's extents, so even
//     a huge file costs a few metadata updates. It works when the lower and
//     the upper are on one filesystem that can reflink (XFS with reflink=1,
//     btrfs). The kernel itself decides: EXDEV across filesystems,
//     EOPNOTSUPP where there are no reflinks (ext4, tmpfs). That is also
//     the only reliable "same filesystem" test: btrfs subvolumes have
//     st_devs of their own yet clone into each other.
//   - copy_file_range per data extent (MethodCopyRange): the data moves
//     inside the kernel, never through this process. Extents come from
//     SEEK_DATA/SEEK_HOLE, so holes are skipped and a sparse file stays
//     sparse (the kernel overlay skips holes the same way). Calls that copy
//     short are continued where they stopped; EXDEV (different filesystems:
//     Linux 5.19 and later copy only within one), EOPNOTSUPP, ENOSYS,
//     EINVAL or a call copying nothing hands the rest to the last method.
//   - pread/pwrite through a 1 MiB buffer per data extent
//     (MethodReadWrite), holes skipped alike: works everywhere.
//
// Any other error (EIO, ENOSPC, ...) fails the copy-up with that
// syscall.Errno; the slower methods would meet it too. Which method
// copied each file is logged at debug level ("method").
//
// Files: copyup.go (Copier, building and placing objects), data.go (a regular file's data,
// by the methods above), extents.go (a file's extent map, FIEMAP, for checking a copy
// shares its source's blocks), tree.go (TreeCopy: whole layer trees, overlay xattrs and
// hard links kept, for snapshots).
package copyup

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// WorkDir is the scratch directory "work" inside the configured workdir,
// which must be on the upper layer's filesystem so renames out of it are
// atomic. The kernel uses the same directory for the same purpose and
// empties it at mount; so do we.
type WorkDir struct {
	fd  int
	seq atomic.Uint64
	tag string
}

// OpenWorkDir opens (creating if needed) workdir/work and removes whatever a
// previous run left in it. The caller must hold the workdir exclusively.
func OpenWorkDir(workdir string) (*WorkDir, error) {
	l, err := layer.Open(workdir)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	if err := unix.Mkdirat(l.Root, "work", 0o700); err != nil && err != unix.EEXIST {
		return nil, fmt.Errorf("workdir %s: creating work: %w", workdir, err)
	}
	fd, err := layer.OpenDir(l.Root, "work")
	if err != nil {
		return nil, fmt.Errorf("workdir %s: opening work: %w", workdir, err)
	}
	w := &WorkDir{fd: fd, tag: strconv.Itoa(unix.Getpid())}
	names, err := layer.ReadNames(fd, "")
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("workdir %s: %w", workdir, err)
	}
	for _, n := range names {
		if err := layer.RemoveAll(fd, n); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("workdir %s: removing leftover %s: %w", workdir, n, err)
		}
	}
	return w, nil
}

// FD is the descriptor of the work directory.
func (w *WorkDir) FD() int { return w.fd }

// Close releases the work directory descriptor.
func (w *WorkDir) Close() error { return unix.Close(w.fd) }

// TempName returns a name not used before in the work directory by this
// process; "#" leads like the kernel's own temporary names.
func (w *WorkDir) TempName() string {
	return "#ovlnfs." + w.tag + "." + strconv.FormatUint(w.seq.Add(1), 16)
}

// Discard removes a temporary entry, whatever it holds.
func (w *WorkDir) Discard(name string) error { return layer.RemoveAll(w.fd, name) }

// Names lists what is in the work directory (tests check it is left empty).
func (w *WorkDir) Names() ([]string, error) { return layer.ReadNames(w.fd, "") }

// Xattrs names the overlay's private attributes under one prefix
// ("trusted.overlay." or "user.overlay.").
type Xattrs struct{ Prefix string }

func (x Xattrs) Opaque() string   { return x.Prefix + "opaque" }
func (x Xattrs) Origin() string   { return x.Prefix + "origin" }
func (x Xattrs) Impure() string   { return x.Prefix + "impure" }
func (x Xattrs) Whiteout() string { return x.Prefix + "whiteout" }
func (x Xattrs) UUID() string     { return x.Prefix + "uuid" }
func (x Xattrs) Redirect() string { return x.Prefix + "redirect" }
func (x Xattrs) Nlink() string    { return x.Prefix + "nlink" }
func (x Xattrs) Upper() string    { return x.Prefix + "upper" }

// IsPrivate reports whether attr belongs to an overlay under any prefix;
// those are never copied up nor shown through the union.
func IsPrivate(attr string) bool {
	return strings.HasPrefix(attr, "trusted.overlay.") || strings.HasPrefix(attr, "user.overlay.")
}

// Source names a lower object to copy: the name inside its lower parent
// directory and its stat as looked up.
type Source struct {
	Dir  int
	Name string
	Stat unix.Stat_t
	// UUID goes into the origin record: the lower filesystem's uuid, or
	// zeros for an overlay running without uuids (the kernel's uuid=null).
	UUID [16]byte
	// Indexed: the copy becomes the index entry of a lower object with
	// several links (the kernel's index=on), so it records its origin
	// whatever the link count.
	Indexed bool
	// Origin, when set, is the origin record the copy gets instead of one naming the
	// source: a source in a layer committed from an upper carries the record of what it
	// was copied up from, and the copy keeps that identity.
	Origin []byte
}

// Copier runs copy-ups, at most one at a time per key.
type Copier struct {
	work   *WorkDir
	xattrs Xattrs
	log    *slog.Logger

	mu       sync.Mutex
	inflight map[string]*flight

	// beforePlace, when set (tests only), runs between building a copy and
	// placing it.
	beforePlace func()
	// first is the first data-copy method tried (see copyContents); the
	// zero value, MethodClone, is what copy-ups use. Tests set a later one
	// to force a fallback.
	first Method
	// rangeChunk, when set (tests only), bounds each copy_file_range call
	// instead of copyChunk, so that tests see many calls per extent.
	rangeChunk int64
}

type flight struct {
	done chan struct{}
	err  error
}

// NewCopier returns a Copier building in work and marking with xattrs.
func NewCopier(work *WorkDir, xattrs Xattrs, log *slog.Logger) *Copier {
	return &Copier{work: work, xattrs: xattrs, log: log, inflight: map[string]*flight{}}
}

// SetBeforePlaceHook installs a hook run after a copy is built and before it
// is placed; tests use it to force interleavings.
func (c *Copier) SetBeforePlaceHook(f func()) { c.beforePlace = f }

// Do copies src up once for key: concurrent calls with the same key wait for
// the first and share its result. stillNeeded runs first inside the flight
// and may answer an error (such as ErrChanged when another copy-up already
// finished) to skip building altogether. place receives the temporary name of the
// finished copy in the work directory and must move it into the upper layer
// (normally with Place) after re-checking the destination under its lock. If
// place fails, the copy is discarded and the error returned.
func (c *Copier) Do(key string, src Source, stillNeeded func() error, place func(tmp string) error) error {
	c.mu.Lock()
	if f, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		<-f.done
		return f.err
	}
	f := &flight{done: make(chan struct{})}
	c.inflight[key] = f
	c.mu.Unlock()

	f.err = stillNeeded()
	if f.err == nil {
		f.err = c.copyOnce(src, place)
	}

	c.mu.Lock()
	delete(c.inflight, key)
	c.mu.Unlock()
	close(f.done)
	return f.err
}

func (c *Copier) copyOnce(src Source, place func(tmp string) error) (err error) {
	tmp := c.work.TempName()
	defer func() {
		if err != nil {
			if derr := c.work.Discard(tmp); derr != nil {
				c.log.Error("copy-up: discarding temporary copy", "name", tmp, "err", derr)
			}
		}
	}()
	if err := c.build(src, tmp); err != nil {
		return err
	}
	if c.beforePlace != nil {
		c.beforePlace()
	}
	return place(tmp)
}

// build makes a complete copy of src named tmp in the work directory:
// content, owner, mode, xattrs, origin and times.
func (c *Copier) build(src Source, tmp string) error {
	st := &src.Stat
	// Like the kernel without index=on, a lower non-directory with more
	// than one link gets no origin unless it is indexed: its links break
	// on copy-up, and an origin would give the separate copies one inode
	// number.
	var origin []byte
	if st.Mode&unix.S_IFMT == unix.S_IFDIR || st.Nlink == 1 || src.Indexed {
		var err error
		if origin = src.Origin; origin == nil {
			if origin, err = layer.EncodeOrigin(src.Dir, src.Name, src.UUID); err != nil {
				return fmt.Errorf("copy-up %s: encoding origin: %w", src.Name, err)
			}
		}
	}
	wd := c.work.fd
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := c.copyData(src, tmp); err != nil {
			return err
		}
	case unix.S_IFDIR:
		if err := unix.Mkdirat(wd, tmp, 0o700); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := layer.Readlink(src.Dir, src.Name)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, wd, tmp); err != nil {
			return err
		}
	default: // fifo, socket, devices
		if err := unix.Mknodat(wd, tmp, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
	}
	if err := CopyXattrs(src.Dir, src.Name, wd, tmp); err != nil {
		return err
	}
	if origin != nil {
		if err := layer.Setxattr(wd, tmp, c.xattrs.Origin(), origin); err != nil {
			return fmt.Errorf("copy-up %s: recording origin: %w", src.Name, err)
		}
	}
	return SetAttrs(wd, tmp, st)
}

func (c *Copier) copyData(src Source, tmp string) error {
	in, err := layer.OpenFile(src.Dir, src.Name, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := layer.OpenFile(c.work.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	var used Method
	used, err = c.copyContents(int(in.Fd()), int(out.Fd()))
	if err == nil {
		// Durable before the rename can make it visible, clones included
		// (the kernel's overlay skips this fsync after a whole-file clone).
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy-up %s: copying data: %w", src.Name, layer.Errno(err))
	}
	c.log.Debug("copy-up: data copied", "name", src.Name, "bytes", src.Stat.Size, "method", used.String())
	return nil
}

// SetAttrs gives name inside dir the owner, mode and times of st. Owner goes
// first because chown clears setuid/setgid bits; times go last because
// everything before them can touch them.
func SetAttrs(dir int, name string, st *unix.Stat_t) error {
	if err := unix.Fchownat(dir, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(dir, name, st.Mode&0o7777, 0); err != nil {
			return err
		}
	}
	return layer.SetTimes(dir, name, st.Atim, st.Mtim)
}

// CopyXattrs copies every attribute that is not an overlay's own from one
// object to another. Attributes the destination cannot hold (EOPNOTSUPP),
// and security attributes it may not set, are skipped, as the kernel does.
func CopyXattrs(srcDir int, srcName string, dstDir int, dstName string) error {
	return copyXattrs(srcDir, srcName, dstDir, dstName, false)
}

// copyXattrs copies the attributes of one object to another, the overlay's own too when
// private is set (a copy of a layer, which must mean what the layer meant), and then
// every refusal is an error: a layer's copy without its marks would mean another tree.
func copyXattrs(srcDir int, srcName string, dstDir int, dstName string, private bool) error {
	what := "copy-up"
	if private {
		what = "copy"
	}
	names, err := layer.Listxattr(srcDir, srcName)
	if err != nil {
		return fmt.Errorf("%s %s: listing xattrs: %w", what, srcName, err)
	}
	for _, n := range names {
		if !private && IsPrivate(n) {
			continue
		}
		v, err := layer.Getxattr(srcDir, srcName, n)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s %s: reading xattr %s: %w", what, srcName, n, err)
		}
		if err := layer.Setxattr(dstDir, dstName, n, v); err != nil {
			if !private && (err == unix.EOPNOTSUPP || (strings.HasPrefix(n, "security.") && (err == unix.EPERM || err == unix.EACCES))) {
				continue
			}
			return fmt.Errorf("%s %s: setting xattr %s: %w", what, srcName, n, err)
		}
	}
	return nil
}

// Place moves the finished temporary tmp from the work directory to name in
// the upper directory parent, which must not hold that name. It marks the
// parent impure first (it is about to hold an object with an origin, as the
// kernel records) and keeps the parent's times, because a copy-up is not a
// change a client made to the parent. The caller holds the parent's lock.
func (c *Copier) Place(tmp string, parent int, name string) error {
	return c.place(parent, name, func() error {
		return unix.Renameat2(c.work.fd, tmp, parent, name, unix.RENAME_NOREPLACE)
	})
}

// PlaceLink is Place for an object that exists already (an index entry):
// srcName in srcDir gets the new name in parent as another link.
func (c *Copier) PlaceLink(srcDir int, srcName string, parent int, name string) error {
	return c.place(parent, name, func() error {
		return unix.Linkat(srcDir, srcName, parent, name, 0)
	})
}

func (c *Copier) place(parent int, name string, move func() error) error {
	pst, err := layer.Fstat(parent)
	if err != nil {
		return err
	}
	if err := MarkImpure(parent, c.xattrs); err != nil {
		return err
	}
	if err := move(); err != nil {
		return err
	}
	if err := layer.SetTimes(parent, "", pst.Atim, pst.Mtim); err != nil {
		c.log.Warn("copy-up: restoring parent times", "name", name, "err", err)
	}
	return nil
}

// MarkImpure sets the impure marker on the upper directory dir unless it is
// already there.
func MarkImpure(dir int, x Xattrs) error {
	has, err := layer.HasXattr(dir, "", x.Impure())
	if err != nil || has {
		return err
	}
	return layer.Setxattr(dir, "", x.Impure(), []byte("y"))
}

// ErrChanged is returned by place callbacks when the destination changed
// while the copy was built; callers retry from a fresh lookup.
var ErrChanged = errors.New("copy-up destination changed")

// IsChanged reports whether err is ErrChanged.
func IsChanged(err error) bool { return errors.Is(err, ErrChanged) }
