package uml

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestKernelClientQuota is issue #17's quota check through the Linux NFS client: on an
// export with -o quota_bytes=4M,quota_inodes=40 (the union's own accounting),
// quota-workload.sh's `dd` of 12.5 MiB fails with "Disk quota exceeded", and the file on
// the upper is not larger than the quota; a write to a 6 MiB lower file (whose copy-up
// would pass the quota) fails the same way and copies nothing; df shows the quota as the
// size; removing the file makes room again; touch stops at the inode quota with the same
// error.
func TestKernelClientQuota(t *testing.T) {
	requirePrerequisites(t)
	testsDir, bin, out := workloadDirs(t, "quota")
	for _, f := range []string{"guest.status", "transcript.txt", "ready-fill", "measured"} {
		os.Remove(filepath.Join(out, f))
	}
	const quota = 4 << 20
	root := t.TempDir()
	lower, upper, work := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work")
	testenv.WriteFiles(t, root, map[string]string{
		"lower/big.bin":   "first" + strings.Repeat("x", 6<<20),
		"lower/small.txt": "small\n",
	})
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ns := newNetns(t)
	server := testenv.StartServer(t, bin, []string{"ip", "netns", "exec", ns},
		"--lowerdir="+lower, "--upperdir="+upper, "--workdir="+work, "-o", "quota_bytes=4M,quota_inodes=40",
		"--listen="+serverIP+":"+nfsPort)
	// After the dd past the quota the guest asks the host to measure the file on the upper.
	fill := make(chan int64, 1)
	guestDone := make(chan struct{})
	go func() {
		defer close(fill)
		for {
			select {
			case <-guestDone:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := os.Stat(filepath.Join(out, "ready-fill")); err != nil {
				continue
			}
			fi, err := os.Lstat(filepath.Join(upper, "fill"))
			size := int64(-1)
			if err == nil {
				size = fi.Size()
			}
			fill <- size
			os.WriteFile(filepath.Join(out, "measured"), []byte(fmt.Sprintf("%d\n", size)), 0o644)
			return
		}
	}()
	runGuest(t, ns, testsDir, out, "WORKLOAD=quota-workload.sh", "MANIFEST=no", "NFSOPTS=actimeo=1")
	close(guestDone)
	stopServer(t, server, filepath.Join(out, "ovlnfs-server.log"))
	transcript, _ := guestResult(t, out)
	wantLines(t, transcript, map[string]string{
		"df before:":                  "size 4096 used 0 avail 4096",
		"df inodes before:":           "inodes 40 used 0 free 40",
		"dd past the quota:":          "Disk quota exceeded",
		"dd into the big lower file:": "Disk quota exceeded",
		"big.bin still reads:":        "first",
		"rm fill:":                    "ok",
		"df after rm:":                "size 4096 avail 4096",
		"dd after rm:":                "ok",
		"small.txt copied up:":        "ok",
		"touch refused after":         "Disk quota exceeded",
		"mkdir at the inode quota:":   "Disk quota exceeded",
		"df inodes full:":             "inodes 40 free 0",
		"rm n0:":                      "ok",
		"touch after rm:":             "ok",
	})
	size, ok := <-fill
	switch {
	case !ok:
		t.Errorf("the guest never asked for the measure of fill")
	case size < 0:
		t.Errorf("fill is not on the upper after the dd")
	case size > quota:
		t.Errorf("fill holds %d bytes on the upper, past the quota of %d", size, quota)
	case size < quota-(1<<20):
		t.Errorf("fill holds only %d bytes on the upper: the dd stopped long before the quota of %d", size, quota)
	default:
		t.Logf("fill on the upper after the dd: %d bytes (quota %d)", size, quota)
	}
	if _, err := os.Lstat(filepath.Join(upper, "big.bin")); !os.IsNotExist(err) {
		t.Errorf("the refused copy-up left big.bin in the upper: %v", err)
	}
	// What the upper holds at the end: nothing past the quota either.
	var total int64
	var objects int
	filepath.Walk(upper, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == upper {
			return nil
		}
		objects++
		if fi.Mode().IsRegular() {
			total += fi.Size()
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Size > quota {
			t.Errorf("%s: %d bytes, past the quota of %d", p, st.Size, quota)
		}
		return nil
	})
	if total > quota || objects > 40 {
		t.Errorf("the upper holds %d bytes in %d objects, past the quota (%d bytes, 40 inodes)", total, objects, quota)
	}
}
