package billyunion

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// projectQuota is a quota the upper's filesystem enforces: an XFS project quota. The
// upper and the work directory (copy-ups and new objects are built there, then renamed
// into the upper, and XFS refuses a rename into a directory of another project) carry the
// project id with the inherit flag, so everything made below them is the project's; the
// kernel counts allocated blocks and inodes and answers EDQUOT itself. The union counts
// nothing then.
type projectQuota struct {
	fd                      int // the upper root's descriptor (the union's, not closed here)
	id                      uint32
	limitBytes, limitInodes uint64
}

// The kernel's project quota interface (linux/fs.h, linux/quota.h, linux/dqblk_xfs.h),
// which golang.org/x/sys/unix does not carry.
const (
	xfsSuperMagic      = 0x58465342
	fsIocFsgetxattr    = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFssetxattr    = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagProjinherit = 0x200
	qXGetQuota         = 'X'<<8 + 3
	qXSetQLim          = 'X'<<8 + 4
	qXGetQStat         = 'X'<<8 + 5
	prjQuota           = 2
	fsProjQuota        = 2 // fs_disk_quota.d_flags
	fsDquotVersion     = 1
	fsDqIsoft          = 1 << 0
	fsDqIhard          = 1 << 1
	fsDqBsoft          = 1 << 2
	fsDqBhard          = 1 << 3
	fsQuotaPdqAcct     = 1 << 4 // fs_quota_stat.qs_flags
	fsQuotaPdqEnfd     = 1 << 5
)

// fsxattr is struct fsxattr.
type fsxattr struct {
	xflags, extsize, nextents, projid, cowextsize uint32
	pad                                           [8]byte
}

// fsDiskQuota is struct fs_disk_quota (112 bytes).
type fsDiskQuota struct {
	version, flags                           int8
	fieldmask                                uint16
	id                                       uint32
	blkHard, blkSoft, inoHard, inoSoft       uint64
	bcount, icount                           uint64
	itimer, btimer                           int32
	iwarns, bwarns                           uint16
	itimerHi, btimerHi, rtbtimerHi, padding2 int8
	rtbHard, rtbSoft, rtbcount               uint64
	rtbtimer                                 int32
	rtbwarns                                 uint16
	padding3                                 int16
	padding4                                 [8]byte
}

func quotactlFD(fd, cmd int, id uint32, addr unsafe.Pointer) error {
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(cmd<<8|prjQuota), uintptr(id), uintptr(addr), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getFsxattr(fd int) (fsxattr, error) {
	var x fsxattr
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFsgetxattr, uintptr(unsafe.Pointer(&x)))
	if e != 0 {
		return x, e
	}
	return x, nil
}

func setFsxattr(fd int, x *fsxattr) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFssetxattr, uintptr(unsafe.Pointer(x)))
	if e != 0 {
		return e
	}
	return nil
}

// projectQuotaEnforced reports whether the filesystem of fd is XFS with project quotas
// accounted and enforced (mounted with prjquota).
func projectQuotaEnforced(fd int) bool {
	var sfs unix.Statfs_t
	if unix.Fstatfs(fd, &sfs) != nil || sfs.Type != xfsSuperMagic {
		return false
	}
	var qs [128]byte // struct fs_quota_stat is 80 bytes
	if quotactlFD(fd, qXGetQStat, 0, unsafe.Pointer(&qs[0])) != nil {
		return false
	}
	flags := binary.NativeEndian.Uint16(qs[2:4])
	return flags&fsQuotaPdqAcct != 0 && flags&fsQuotaPdqEnfd != 0
}

// newProjectQuota sets up a project quota for the upper at upperPath (its root descriptor
// upperFD) and the work directory work, or answers nil, nil when their filesystem does not
// enforce project quotas. The project id is the one the upper root carries with the
// inherit flag (an administrator's, or this function's from an earlier start); else the
// low 32 bits of the upper root's inode number, set on every directory and regular file
// below the upper and the work directory, then on their roots (so that an interrupted
// setup is redone at the next start). The limits are set at every start.
func newProjectQuota(upperFD int, upperPath, work string, limitBytes, limitInodes uint64) (*projectQuota, error) {
	if !projectQuotaEnforced(upperFD) {
		return nil, nil
	}
	rx, err := getFsxattr(upperFD)
	if err != nil {
		return nil, fmt.Errorf("reading the upper's project id: %w", err)
	}
	id := rx.projid
	if id == 0 || rx.xflags&fsXflagProjinherit == 0 {
		var st unix.Stat_t
		if err := unix.Fstat(upperFD, &st); err != nil {
			return nil, err
		}
		if id = uint32(st.Ino); id == 0 {
			id = 1
		}
	}
	for _, root := range []string{upperPath, work} {
		if err := tagProject(root, id); err != nil {
			return nil, fmt.Errorf("setting project id %d below %s: %w", id, root, err)
		}
	}
	pq := &projectQuota{fd: upperFD, id: id, limitBytes: limitBytes, limitInodes: limitInodes}
	d := fsDiskQuota{version: fsDquotVersion, flags: fsProjQuota, id: id,
		fieldmask: fsDqBhard | fsDqBsoft | fsDqIhard | fsDqIsoft,
		blkHard:   (limitBytes + 511) / 512, inoHard: limitInodes}
	if err := quotactlFD(upperFD, qXSetQLim, id, unsafe.Pointer(&d)); err != nil {
		return nil, fmt.Errorf("setting the limits of project %d: %w", id, err)
	}
	return pq, nil
}

// tagProject gives root and the directories and regular files below it project id id,
// directories with the inherit flag; root last. A root that has them already is left
// alone: it was tagged whole before. Symlinks, devices (whiteouts), fifos and sockets
// cannot be opened for the ioctl and keep their project; what is made from now on inherits
// the id.
func tagProject(root string, id uint32) error {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	x, err := getFsxattr(fd)
	if err != nil {
		return err
	}
	if x.projid == id && x.xflags&fsXflagProjinherit != 0 {
		return nil
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if p == root || !(d.IsDir() || d.Type().IsRegular()) {
			return nil
		}
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
		if d.IsDir() {
			flags |= unix.O_DIRECTORY
		}
		f, err := unix.Open(p, flags, 0)
		if err != nil {
			if err == unix.ENOENT {
				return nil
			}
			return err
		}
		defer unix.Close(f)
		return setProject(f, id, d.IsDir())
	})
	if err != nil {
		return err
	}
	return setProject(fd, id, true)
}

func setProject(fd int, id uint32, dir bool) error {
	x, err := getFsxattr(fd)
	if err != nil {
		return err
	}
	x.projid = id
	if dir {
		x.xflags |= fsXflagProjinherit
	}
	return setFsxattr(fd, &x)
}

// usage is the project's blocks (as bytes) and inodes, as the kernel counts them.
func (pq *projectQuota) usage() (bytes, inodes uint64, err error) {
	var d fsDiskQuota
	if err := quotactlFD(pq.fd, qXGetQuota, pq.id, unsafe.Pointer(&d)); err != nil {
		if err == syscall.ENOENT {
			return 0, 0, nil // nothing counted yet
		}
		return 0, 0, err
	}
	return d.bcount * 512, d.icount, nil
}

// projectSlack is how near the project's byte limit a failed allocation must come for its
// ENOSPC to be the quota's (quotaErr).
const projectSlack = 1 << 20

// quotaErr is err as the client must see it: XFS answers ENOSPC, not EDQUOT, when a
// project quota refuses an allocation (the project is a directory tree that looks full).
// With a project quota, an ENOSPC of a change that needed need bytes is EDQUOT when the
// project is at its inode limit or within need bytes (at least projectSlack) of its byte
// limit; any other ENOSPC is the filesystem's own, and stays. Without a project quota err
// is returned as it is.
func (fs *FS) quotaErr(err error, need int64) error {
	pq := fs.project
	if pq == nil || err == nil || !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	b, n, uerr := pq.usage()
	if uerr != nil {
		return err
	}
	if pq.limitInodes > 0 && n >= pq.limitInodes {
		return syscall.EDQUOT
	}
	if pq.limitBytes > 0 && b+uint64(max(need, projectSlack)) >= pq.limitBytes {
		return syscall.EDQUOT
	}
	return err
}
