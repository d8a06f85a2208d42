package nfs3

import (
	"errors"
	"strconv"
	"syscall"
)

// Status is an nfsstat3 (RFC 1813 section 2.6).
type Status uint32

// The nfsstat3 values.
const (
	StatusOK          Status = 0
	StatusPerm        Status = 1
	StatusNoEnt       Status = 2
	StatusIO          Status = 5
	StatusNXIO        Status = 6
	StatusAcces       Status = 13
	StatusExist       Status = 17
	StatusXDev        Status = 18
	StatusNoDev       Status = 19
	StatusNotDir      Status = 20
	StatusIsDir       Status = 21
	StatusInval       Status = 22
	StatusFBig        Status = 27
	StatusNoSpc       Status = 28
	StatusROFS        Status = 30
	StatusMLink       Status = 31
	StatusNameTooLong Status = 63
	StatusNotEmpty    Status = 66
	StatusDQuot       Status = 69
	StatusStale       Status = 70
	StatusBadHandle   Status = 10001
	StatusNotSync     Status = 10002
	StatusBadCookie   Status = 10003
	StatusNotSupp     Status = 10004
	StatusTooSmall    Status = 10005
	StatusServerFault Status = 10006
	StatusBadType     Status = 10007
)

func (s Status) String() string { return "NFS3 status " + strconv.FormatUint(uint64(s), 10) }

// statusError is a failure with no errno behind it: the protocol's own conditions.
type statusError Status

func (e statusError) Error() string { return Status(e).String() }

// The failures the procedures report that no errno expresses.
var (
	errStale       error = statusError(StatusStale) // a handle names nothing (now)
	errNotSync     error = statusError(StatusNotSync)
	errTooSmall    error = statusError(StatusTooSmall)
	errBadType     error = statusError(StatusBadType)
	errServerFault error = statusError(StatusServerFault)
)

// StatusOf is the one place a failure becomes an NFS status. Most errnos share their
// number with the status; the rest are listed. An error that is no errno the protocol
// can express means the server, not the disk, failed: SERVERFAULT.
func StatusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	var st statusError
	if errors.As(err, &st) {
		return Status(st)
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return StatusServerFault
	}
	switch errno {
	case syscall.EPERM, syscall.ENOENT, syscall.EIO, syscall.ENXIO, syscall.EACCES,
		syscall.EEXIST, syscall.EXDEV, syscall.ENODEV, syscall.ENOTDIR, syscall.EISDIR,
		syscall.EINVAL, syscall.EFBIG, syscall.ENOSPC, syscall.EROFS, syscall.EMLINK:
		return Status(errno)
	case syscall.ENAMETOOLONG:
		return StatusNameTooLong
	case syscall.ENOTEMPTY:
		return StatusNotEmpty
	case syscall.EDQUOT:
		return StatusDQuot
	case syscall.ESTALE:
		return StatusStale
	case syscall.ENOTSUP:
		return StatusNotSupp
	case syscall.ELOOP:
		// NFSv3 has no ELOOP; Linux's nfsd answers a loop with NFS3ERR_IO, but an
		// invalid-argument answer keeps `mv a a/b` from looking like a disk failure.
		return StatusInval
	}
	return StatusServerFault
}
