// Package service checks the systemd unit in examples/systemd.
package service

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestUnitVerifies: the unit passes systemd-analyze verify, with ExecStart naming a built
// ovlnfs (verify insists that the binary exists).
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing (Debian package systemd)")
		}
		t.Skip("no systemd-analyze")
	}
	bin := testenv.BuildOvlnfs(t)
	unit, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "examples", "systemd", "ovlnfs.service"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/ovlnfs", bin)
	if text == string(unit) {
		t.Fatal("the unit does not run /usr/local/bin/ovlnfs: the test shows nothing")
	}
	p := filepath.Join(t.TempDir(), "ovlnfs.service")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", p).CombinedOutput()
	// Lines about other units of this machine are not this unit's.
	var ours []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, "ovlnfs.service") {
			ours = append(ours, l)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
