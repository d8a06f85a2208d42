package nfs3_test

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
)

// TestStatusOf is the errno → status table of RFC 1813 section 2.6, errnos found inside
// wrapping errors, and SERVERFAULT for what no status expresses.
func TestStatusOf(t *testing.T) {
	for errno, want := range map[syscall.Errno]nfs3.Status{
		syscall.EPERM: 1, syscall.ENOENT: 2, syscall.EIO: 5, syscall.ENXIO: 6, syscall.EACCES: 13,
		syscall.EEXIST: 17, syscall.EXDEV: 18, syscall.ENODEV: 19, syscall.ENOTDIR: 20,
		syscall.EISDIR: 21, syscall.EINVAL: 22, syscall.EFBIG: 27, syscall.ENOSPC: 28,
		syscall.EROFS: 30, syscall.EMLINK: 31, syscall.ENAMETOOLONG: 63, syscall.ENOTEMPTY: 66,
		syscall.EDQUOT: 69, syscall.ESTALE: 70, syscall.ENOTSUP: 10004, syscall.ELOOP: 22,
		syscall.EBADF: 10006,
	} {
		if got := nfs3.StatusOf(&os.PathError{Op: "x", Path: "y", Err: errno}); got != want {
			t.Errorf("%v: %d, want %d", errno, got, want)
		}
	}
	if got := nfs3.StatusOf(errors.New("not an errno")); got != nfs3.StatusServerFault {
		t.Errorf("non-errno error: %d, want SERVERFAULT", got)
	}
	if got := nfs3.StatusOf(nil); got != nfs3.StatusOK {
		t.Errorf("nil: %d, want OK", got)
	}
}
