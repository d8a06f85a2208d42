package uml

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestKernelXFSProjectQuota: the union's use of XFS project quotas (billyunion/projquota.go),
// where the kernel counts and refuses. The host kernel here has no quota support, the UML
// kernel has XFS with quotas: the host makes an XFS image, the guest mounts it with
// prjquota as its second block device and runs billyunion's TestQuotaXFSProject on it
// (xfsquota-workload.sh): the write past the quota gets EDQUOT from the kernel with the
// project's blocks within the limit, and so on.
func TestKernelXFSProjectQuota(t *testing.T) {
	requirePrerequisites(t)
	testenv.RequireCommands(t, "mkfs.xfs", "go")
	testsDir := filepath.Join(testenv.RepoRoot(t), "tests", "uml")
	out := filepath.Join(artifactsDir(t), "xfsquota")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"guest.status", "transcript.txt"} {
		os.Remove(filepath.Join(out, f))
	}
	bin := filepath.Join(out, "billyunion.test")
	build := exec.Command("go", "test", "-c", "-tags", "xfsquota", "-o", bin, "./billyunion")
	build.Dir = testenv.RepoRoot(t)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c -tags xfsquota ./billyunion: %v\n%s", err, b)
	}
	t.Cleanup(func() { os.Remove(bin) })
	img := filepath.Join(t.TempDir(), "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil { // sparse: mkfs.xfs wants 300 MiB
		t.Fatal(err)
	}
	sh(t, time.Minute, "mkfs.xfs", "-q", img)
	ns := newNetns(t)
	runGuest(t, ns, testsDir, out, "WORKLOAD=xfsquota-workload.sh", "NOMOUNT=yes", "ubd1="+img)
	transcript, _ := guestResult(t, out)
	wantLines(t, transcript, map[string]string{
		"mount xfs prjquota:":           "ok",
		"--- PASS: TestQuotaXFSProject": "",
		"test exit status":              "0",
		"umount xfs:":                   "ok",
	})
}
