package server_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// TestStandbyWaitsForTheWorkdir: a standby server over two workspaces whose workdirs
// another holder has waits (saying who holds them) instead of refusing, opens once both
// are free, then holds them itself (New over the same exports is refused) and serves
// what the previous holder wrote; given up on, it returns the context's error.
func TestStandbyWaitsForTheWorkdir(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	exports := []server.Export{
		workspace(t, root, "/ws/a", "127.0.0.1(rw,insecure,no_root_squash)", lower),
		workspace(t, root, "/ws/b", "127.0.0.1(rw,insecure,no_root_squash)", lower),
	}
	if err := os.WriteFile(exports[1].Upper+"/left.txt", []byte("by the first gateway\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var releases []func() error
	for _, e := range exports {
		release, err := server.HoldWorkdir(e.Work)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	if _, err := server.New(server.Config{Exports: exports}); err == nil {
		t.Fatal("New over held workdirs did not refuse")
	}

	// Given up on while it waits.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := server.NewStandby(ctx, server.Config{Exports: exports}, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a standby given up on: %v, want the context's error", err)
	}

	waited := make(chan string, 4)
	type result struct {
		srv *server.Server
		err error
	}
	done := make(chan result, 1)
	go func() {
		srv, err := server.NewStandby(context.Background(), server.Config{Exports: exports},
			func(workdir, holder string) { waited <- workdir + " " + holder })
		done <- result{srv, err}
	}()
	me := strconv.Itoa(os.Getpid())
	select {
	case w := <-waited:
		if w != exports[0].Work+" "+me {
			t.Errorf("waiting for %q, want the first workdir and this pid", w)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the standby never said it waits")
	}
	_ = releases[0]()
	select {
	case w := <-waited:
		if w != exports[1].Work+" "+me {
			t.Errorf("then waiting for %q, want the second workdir", w)
		}
	case r := <-done:
		t.Fatalf("the standby started with one workdir still held: %v", r.err)
	case <-time.After(5 * time.Second):
		t.Fatal("the standby did not go on to the second workdir")
	}
	select {
	case r := <-done:
		t.Fatalf("the standby started with the second workdir held: %v", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	released := time.Now()
	_ = releases[1]()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the standby did not start once the workdirs were free")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if d := time.Since(released); d > 2*time.Second {
		t.Errorf("the standby took %v to start after the release", d)
	}
	if _, err := server.New(server.Config{Exports: exports}); err == nil {
		t.Error("New over the standby's workdirs did not refuse: it does not hold them")
	}
	addr := rpctest.ServeBuilt(t, r.srv)
	c := rpctest.Dial(t, addr)
	if got := string(readAll(c, c.Lookup(c.Mount("/ws/b"), "left.txt"))); got != "by the first gateway\n" {
		t.Errorf("the standby serves %q", got)
	}
}
