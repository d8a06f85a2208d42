package uml

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// workloadDirs is what a workload test starts with: the directory of the tests' scripts,
// the ovlnfs binary built from the tree, and the test's artifacts directory (made).
func workloadDirs(t *testing.T, name string) (testsDir, bin, out string) {
	t.Helper()
	testsDir = filepath.Join(testenv.RepoRoot(t), "tests", "uml")
	bin = testenv.BuildOvlnfs(t)
	out = filepath.Join(artifactsDir(t), name)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return testsDir, bin, out
}

// guestStep is one exchange of a workload with the host: the guest writes the file ask
// into the artifacts directory and waits for answer, which the host writes once it has
// run the step's action (its output, "FAIL ..." when it failed).
type guestStep struct{ ask, answer string }

// clearArtifacts removes the files and step markers an earlier run left in a kept
// artifacts directory.
func clearArtifacts(out string, files []string, steps []guestStep) {
	for _, f := range files {
		os.Remove(filepath.Join(out, f))
	}
	for _, s := range steps {
		os.Remove(filepath.Join(out, s.ask))
		os.Remove(filepath.Join(out, s.answer))
	}
}

// answerSteps runs the host's side of steps while the guest runs: for each in turn it
// waits for the ask, runs actions[ask] and writes the answer. It sends what went wrong
// and each step's output ("ask: output") once the steps are done, or once guestDone is
// closed with a step not asked.
func answerSteps(out string, steps []guestStep, actions map[string]func() (string, error), guestDone <-chan struct{}) <-chan [2][]string {
	done := make(chan [2][]string, 1)
	go func() {
		var problems, outputs []string
		for _, s := range steps {
			for {
				if _, err := os.Stat(filepath.Join(out, s.ask)); err == nil {
					break
				}
				select {
				case <-guestDone:
					done <- [2][]string{append(problems, "the guest never wrote "+s.ask), outputs}
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			msg, err := actions[s.ask]()
			outputs = append(outputs, s.ask+": "+msg)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v: %s", s.ask, err, msg))
				msg = "FAIL " + msg
			}
			_ = os.WriteFile(filepath.Join(out, s.answer), []byte(strings.ReplaceAll(msg, "\n", " ")+"\n"), 0o644)
		}
		done <- [2][]string{problems, outputs}
	}()
	return done
}
