package libnfs_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/bigdir"
	"github.com/ovlnfs/ovlnfs/tests/internal/churn"
	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// bigEntries is the size of the merged directory the issue asks to list through real clients.
const bigEntries = 100_000

// TestBigMergedDirectory lists a merged directory of 100,000 entries (spread over two
// lowers and the upper, with overridden and whited-out names) with nfs-ls: complete and
// exactly once per name, also while another NFS client creates and removes entries in it.
func TestBigMergedDirectory(t *testing.T) {
	testenv.RequireRoot(t) // whiteouts are character devices
	testenv.RequireCommands(t, "nfs-ls")
	bin := testenv.BuildOvlnfs(t)
	started := time.Now()
	fx, err := bigdir.Write(t.TempDir(), bigEntries)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fixture written in %v", time.Since(started).Round(time.Millisecond))
	port := testenv.FreePort(t)
	testenv.StartServer(t, bin, nil, "--lowerdir="+fx.Lower1+":"+fx.Lower2, "--upperdir="+fx.Upper,
		"--workdir="+fx.Work, fmt.Sprintf("--listen=127.0.0.1:%d", port))
	c := client{t: t, port: port}

	list := func(what string) []string {
		t.Helper()
		begin := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nfs-ls", c.url("/"+bigdir.Dir)).Output()
		if err != nil {
			t.Fatalf("nfs-ls (%s): %v", what, err)
		}
		got := names(string(out))
		t.Logf("%s listing: %d names in %v", what, len(got), time.Since(begin).Round(time.Millisecond))
		return got
	}
	// The first listing builds the merged listing (cold); the tests/uml test lists warm.
	if problems := churn.Check(list("cold"), fx, false); len(problems) > 0 {
		t.Errorf("listing:\n%s", strings.Join(problems, "\n"))
	}

	stop := make(chan struct{})
	var counts churn.Counts
	var churnErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		churnErr = churn.Run(fmt.Sprintf("127.0.0.1:%d", port), bigEntries, stop, &counts)
	}()
	for counts.Created.Load() < 20 { // the listing must start with the churn under way
		time.Sleep(10 * time.Millisecond)
	}
	before := counts.Created.Load() + counts.Removed.Load()
	listed := list("concurrent")
	during := counts.Created.Load() + counts.Removed.Load() - before
	close(stop)
	wg.Wait()
	if churnErr != nil {
		t.Fatalf("the churning client failed: %v", churnErr)
	}
	t.Logf("the other client made %d changes during the listing", during)
	if during < 100 {
		t.Errorf("only %d changes overlapped the listing; the test proves nothing", during)
	}
	if problems := churn.Check(listed, fx, true); len(problems) > 0 {
		t.Errorf("listing during changes:\n%s", strings.Join(problems, "\n"))
	}
}
