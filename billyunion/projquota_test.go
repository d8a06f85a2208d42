package billyunion

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestProjectQuotaStructSizes(t *testing.T) {
	if s := unsafe.Sizeof(fsDiskQuota{}); s != 112 {
		t.Errorf("fs_disk_quota is %d bytes here, 112 in the kernel", s)
	}
	if s := unsafe.Sizeof(fsxattr{}); s != 28 {
		t.Errorf("fsxattr is %d bytes here, 28 in the kernel", s)
	}
}

// TestQuotaOnXFSWithoutPrjquotaCountsItself: on XFS mounted without prjquota (a loop
// device here), the union does not take the filesystem for one enforcing project quotas:
// it counts itself, and a write past the quota answers EDQUOT with nothing written.
func TestQuotaOnXFSWithoutPrjquotaCountsItself(t *testing.T) {
	mnt := loopXFS(t)
	ls := &layerSet{t: t, root: mnt, n: 1}
	for _, d := range []string{"l1", "u", "w"} {
		noErr(t, "mkdir", os.Mkdir(filepath.Join(mnt, d), 0o755))
	}
	fs := ls.openWith(Options{QuotaBytes: 8192})
	if u, ok := fs.Quota(); !ok || u.Kind != QuotaOwn || fs.project != nil {
		t.Fatalf("quota %+v, %v, project %v: want the union's own count", u, ok, fs.project)
	}
	f, err := fs.Create("f")
	noErr(t, "create", err)
	defer f.Close()
	_, err = f.Write(make([]byte, 8193))
	wantErrno(t, "a write past the quota", err, syscall.EDQUOT)
	if got := upperSize(t, ls, "f"); got != 0 {
		t.Fatalf("the refused write left %d bytes", got)
	}
}

// requirePrerequisite skips a test whose prerequisite is missing, loudly, and fails it
// when CI=true.
func requirePrerequisite(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (install with: sudo .ci/run --deps-only)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("PREREQUISITE MISSING in CI: %s", msg)
	}
	t.Skipf("SKIPPED, PREREQUISITE MISSING: %s", msg)
}

// loopXFS makes a 320 MiB (sparse) XFS image, mounts it through a loop device without
// quota options and answers the mount point; cleanup unmounts it and detaches the device.
func loopXFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		requirePrerequisite(t, "needs root (loop devices, mounts)")
	}
	for _, c := range []string{"mkfs.xfs", "losetup"} {
		if _, err := exec.LookPath(c); err != nil {
			requirePrerequisite(t, "command %q not found (packages xfsprogs, mount)", c)
		}
	}
	tmp := t.TempDir() // first, so that its removal runs after the unmount
	img := filepath.Join(tmp, "xfs.img")
	noErr(t, "image", os.WriteFile(img, nil, 0o600))
	noErr(t, "image size", os.Truncate(img, 320<<20))
	if out, err := exec.Command("mkfs.xfs", "-q", "-f", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v\n%s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		requirePrerequisite(t, "no loop device (losetup -f --show): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	mnt := filepath.Join(tmp, "mnt")
	noErr(t, "mkdir", os.Mkdir(mnt, 0o755))
	if err := unix.Mount(dev, mnt, "xfs", 0, ""); err != nil {
		requirePrerequisite(t, "mounting %s (xfs): %v", dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}
