package billyunion

import (
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// quota is the union's own accounting of its upper layer against Options.QuotaBytes and
// Options.QuotaInodes (docs/quotas.md). bytes is the apparent size (st_size) of the
// upper's regular files, each inode once; inodes counts every object below the upper's
// root: files, directories, symlinks, devices and whiteouts, and the index entries
// (WORK/index) no upper name links any more. Both are counted once at New
// by walking the upper, then kept up to date by every change that adds or frees them.
//
// Apparent size, not allocated blocks, because it is exactly what a write will add: the
// union refuses a WRITE that would take the count past the limit before writing, so
// nothing beyond the quota is ever written. (Allocated blocks depend on the filesystem's
// block size, preallocation and delayed allocation, and are known only after the fact.)
type quota struct {
	limitBytes, limitInodes uint64 // 0: no limit of that kind
	bytes, inodes           atomic.Int64
	// writing serialises the accounted writes and truncates of one upper inode, so that
	// the size a write's charge is computed from is the size it writes over: the
	// kernel's inode lock, which it holds across a buffered write anyway. One lock per
	// inode being written, not stripes: a slow write never holds up another file's.
	writing *lockTable // by upper inode number
}

// QuotaUsage is an upper layer's quota and what is counted against it.
type QuotaUsage struct {
	// Kind is QuotaProject or QuotaOwn: who counts and refuses.
	Kind string
	// LimitBytes and LimitInodes are the limits; 0 is none.
	LimitBytes, LimitInodes uint64
	// Bytes is the apparent size of the upper's regular files; Inodes the objects below
	// its root, whiteouts included.
	Bytes, Inodes uint64
}

// The kinds of quota (QuotaUsage.Kind).
const (
	// QuotaProject is the upper filesystem's project quota (XFS mounted with
	// prjquota): the kernel counts allocated blocks and inodes and refuses.
	QuotaProject = "project"
	// QuotaOwn is the union's own count of apparent sizes and objects.
	QuotaOwn = "own"
)

// Quota reports the union's quota and usage; ok is false when no quota is set.
func (fs *FS) Quota() (u QuotaUsage, ok bool) {
	if pq := fs.project; pq != nil {
		u = QuotaUsage{Kind: QuotaProject, LimitBytes: pq.limitBytes, LimitInodes: pq.limitInodes}
		var err error
		if u.Bytes, u.Inodes, err = pq.usage(); err != nil {
			fs.log.Warn("quota: reading the project's usage", "project", pq.id, "err", err)
		}
		return u, true
	}
	q := fs.quota
	if q == nil {
		return u, false
	}
	return QuotaUsage{Kind: QuotaOwn, LimitBytes: q.limitBytes, LimitInodes: q.limitInodes,
		Bytes: uint64(max(q.bytes.Load(), 0)), Inodes: uint64(max(q.inodes.Load(), 0))}, true
}

// openQuota sets up the quota New was asked for: the upper filesystem's project quota
// when it enforces them, else the union's own count (index is WORK/index, or "").
func (fs *FS) openQuota(opts Options, index string) error {
	if opts.QuotaBytes == 0 && opts.QuotaInodes == 0 {
		return nil
	}
	pq, err := newProjectQuota(fs.layers[0].Root, opts.Upper, opts.Work, opts.QuotaBytes, opts.QuotaInodes)
	if err != nil {
		fs.log.Warn("quota: the upper's filesystem has project quotas, but setting one up failed; counting in the union instead", "err", err)
	}
	if pq != nil {
		fs.project = pq
		fs.log.Info("quota: the upper filesystem's project quota", "project", pq.id, "bytes", opts.QuotaBytes, "inodes", opts.QuotaInodes)
		return nil
	}
	if fs.quota, err = newQuota(opts.Upper, index, opts.QuotaBytes, opts.QuotaInodes); err != nil {
		return err
	}
	fs.log.Info("quota: counted by the union", "bytes", opts.QuotaBytes, "inodes", opts.QuotaInodes)
	return nil
}

// ParseSize reads a quota size: a whole number with an optional binary suffix K, M, G, T
// or P (powers of 1024; "10G" is 10 GiB), optionally followed by "B" or "iB". It must be
// at least 1.
func ParseSize(s string) (uint64, error) {
	bad := fmt.Errorf("%q is not a size of at least 1 byte (a whole number with an optional K, M, G, T or P suffix)", s)
	num := strings.ToUpper(s)
	needUnit := false
	if strings.HasSuffix(num, "IB") {
		num, needUnit = num[:len(num)-2], true
	} else {
		num = strings.TrimSuffix(num, "B")
	}
	shift := 0
	if n := len(num); n > 0 {
		if i := strings.IndexByte("KMGTP", num[n-1]); i >= 0 {
			shift, num = 10*(i+1), num[:n-1]
		} else if needUnit {
			return 0, bad
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v == 0 {
		return 0, bad
	}
	if v > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v << shift, nil
}

// newQuota counts the upper at root (its path) and the index entries in index (WORK/index,
// "" without the index: entries there are upper files whose names the union still shows,
// through a lower alias) against the limits; nil when neither limit is set.
func newQuota(root, index string, limitBytes, limitInodes uint64) (*quota, error) {
	if limitBytes == 0 && limitInodes == 0 {
		return nil, nil
	}
	if limitBytes > math.MaxInt64 || limitInodes > math.MaxInt64 {
		return nil, fmt.Errorf("billyunion: quota too large: %w", syscall.EINVAL)
	}
	q := &quota{limitBytes: limitBytes, limitInodes: limitInodes, writing: newLockTable()}
	b, n, err := scanUpper(root, index)
	if err != nil {
		return nil, fmt.Errorf("billyunion: counting the upper layer for its quota: %w", err)
	}
	q.bytes.Store(b)
	q.inodes.Store(n)
	return q, nil
}

// scanUpper adds up the apparent size of the regular files below the roots (an empty one
// is skipped) and the objects, each inode once (hard links share one).
func scanUpper(roots ...string) (bytes, inodes int64, err error) {
	seen := map[uint64]bool{}
	for _, root := range roots {
		if root == "" {
			continue
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p == root {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				if os.IsNotExist(err) {
					return nil // removed while walking
				}
				return err
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				return nil
			}
			if !d.IsDir() && st.Nlink > 1 {
				if seen[st.Ino] {
					return nil
				}
				seen[st.Ino] = true
			}
			inodes++
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				bytes += st.Size
			}
			return nil
		})
		if err != nil {
			return 0, 0, err
		}
	}
	return bytes, inodes, nil
}

// reserve counts n more against limit in c, or answers EDQUOT, changing nothing, when
// that would pass the limit. force counts it either way.
func reserve(c *atomic.Int64, limit uint64, n int64, force bool) error {
	if n <= 0 || force || limit == 0 {
		c.Add(n)
		return nil
	}
	for {
		cur := c.Load()
		if cur+n > int64(limit) {
			return syscall.EDQUOT
		}
		if c.CompareAndSwap(cur, cur+n) {
			return nil
		}
	}
}

// reserveInodes counts n new objects; a nil quota counts nothing.
func (q *quota) reserveInodes(n int64, force bool) error {
	if q == nil {
		return nil
	}
	return reserve(&q.inodes, q.limitInodes, n, force)
}

// reserveBytes counts n more bytes of regular files.
func (q *quota) reserveBytes(n int64) error {
	if q == nil {
		return nil
	}
	return reserve(&q.bytes, q.limitBytes, n, false)
}

// release uncounts inodes and bytes (freed, or a reservation not used).
func (q *quota) release(inodes, bytes int64) {
	if q == nil {
		return
	}
	q.inodes.Add(-inodes)
	q.bytes.Add(-bytes)
}

// reserveObject counts one new object of stat st (a copy-up's): one inode and, for a
// regular file, its size. Nothing is counted when either would pass its limit.
func (q *quota) reserveObject(st *unix.Stat_t) (release func(), err error) {
	if q == nil {
		return func() {}, nil
	}
	var size int64
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		size = st.Size
	}
	if err := q.reserveBytes(size); err != nil {
		return nil, err
	}
	if err := q.reserveInodes(1, false); err != nil {
		q.release(0, size)
		return nil, err
	}
	return func() { q.release(1, size) }, nil
}

// resize runs op, which changes the size of the open upper file f to at most end (a write
// ending there, or a truncate to it; -1: at the file's current offset plus n, or its size
// plus n with O_APPEND), under the inode's lock (writing), and counts what it added or freed. A
// growth past the byte quota is refused with EDQUOT before op runs, so nothing beyond the
// quota is written. exact says op sets the size to end (a truncate), which may free.
// Files no longer linked anywhere (nlink 0) are not counted: their space was freed from
// the count when their last name went.
//
// ino is the file's inode number, which picks the lock, cached by the caller (0: not
// known yet, and then found and stored): an upper file's descriptor never changes.
func (q *quota) resize(f *os.File, ino *atomic.Uint64, end int64, n int, exact bool, op func() (int, error)) (int, error) {
	fd := int(f.Fd())
	if ino.Load() == 0 {
		st, err := layer.Fstat(fd)
		if err != nil {
			return 0, layer.Errno(err)
		}
		ino.Store(st.Ino)
	}
	l := q.writing.lockKey(ino.Load())
	defer q.writing.unlockKey(ino.Load(), l)
	st, err := layer.Fstat(fd)
	if err != nil {
		return 0, layer.Errno(err)
	}
	if st.Nlink == 0 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return op()
	}
	start := end - int64(n)
	if end < 0 {
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if err != nil {
			return 0, layer.Errno(err)
		}
		if fl&unix.O_APPEND != 0 {
			start = st.Size
		} else if start, err = unix.Seek(fd, 0, 1); err != nil {
			return 0, layer.Errno(err)
		}
		end = start + int64(n)
	}
	grow := max(end-st.Size, 0)
	if !exact && n == 0 {
		grow = 0 // an empty write extends nothing, wherever it is
	}
	if err := q.reserveBytes(grow); err != nil {
		return 0, err
	}
	done, err := op()
	switch {
	case exact && err == nil:
		q.release(0, grow-(end-st.Size)) // a shrink frees
	case exact:
		q.release(0, grow)
	case done <= 0:
		q.release(0, grow)
	default:
		// A short write adds less.
		q.release(0, grow-max(start+int64(done)-st.Size, 0))
	}
	return done, err
}

// removing prepares the count for removing the upper non-directory name in dir: the
// returned function, called once the removal is done, uncounts the object when that was
// its last link. It holds an O_PATH descriptor on the object meanwhile, to see its link
// count after the removal and any index cleanup.
func (q *quota) removing(dir int, name string) (done func()) {
	if q == nil {
		return func() {}
	}
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return func() {}
	}
	return func() {
		defer unix.Close(fd)
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Nlink > 0 {
			return
		}
		var size int64
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			size = st.Size
		}
		q.release(1, size)
	}
}

// removingDir is removing for the upper directory name in dir, which is empty in the
// union but may hold whiteouts: the directory and what it holds are uncounted.
func (q *quota) removingDir(dir int, name string) (done func()) {
	if q == nil {
		return func() {}
	}
	names, err := layer.ReadNames(dir, name)
	if err != nil {
		names = nil
	}
	return func() { q.release(int64(1+len(names)), 0) }
}
