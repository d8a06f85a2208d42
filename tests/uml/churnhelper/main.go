// Command churnhelper is the UML big-directory test's other NFS client. It runs on the
// host inside the test's network namespace (where the server listens), and the guest
// steers it through marker files in the guest's output directory: it starts churning when
// churn.start appears, writes churn.running once under way, and stops when churn.stop
// appears, writing its change counts to churn.result.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ovlnfs/ovlnfs/tests/internal/churn"
)

func main() {
	addr := flag.String("addr", "", "server HOST:PORT")
	dir := flag.String("dir", "", "directory of the marker files")
	visible := flag.Int("visible", 0, "visible entries of the fixture")
	timeout := flag.Duration("timeout", 4*time.Minute, "give up waiting for a marker after this long")
	flag.Parse()
	if err := run(*addr, *dir, *visible, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "churnhelper:", err)
		_ = os.WriteFile(filepath.Join(*dir, "churn.result"), []byte("error: "+err.Error()+"\n"), 0o644)
		os.Exit(1)
	}
}

func waitFor(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(addr, dir string, visible int, timeout time.Duration) error {
	if addr == "" || dir == "" || visible <= 0 {
		return errors.New("-addr, -dir and -visible are required")
	}
	if err := waitFor(filepath.Join(dir, "churn.start"), timeout); err != nil {
		return err
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	var counts churn.Counts
	go func() { done <- churn.Run(addr, visible, stop, &counts) }()
	changes := func() int64 { return counts.Created.Load() + counts.Removed.Load() }
	for counts.Created.Load() < 20 {
		select {
		case err := <-done:
			return fmt.Errorf("churn ended early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	atRunning := changes()
	if err := os.WriteFile(filepath.Join(dir, "churn.running"), nil, 0o644); err != nil {
		return err
	}
	if err := waitFor(filepath.Join(dir, "churn.stop"), timeout); err != nil {
		close(stop)
		<-done
		return err
	}
	close(stop)
	if err := <-done; err != nil {
		return err
	}
	result := fmt.Sprintf("changes_total %d\nchanges_after_running %d\n", changes(), changes()-atRunning)
	return os.WriteFile(filepath.Join(dir, "churn.result"), []byte(result), 0o644)
}
