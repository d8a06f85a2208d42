package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestStandbyTakesOver: `serve --standby` over the workdir of a running server waits,
// saying so, without listening; when the first server stops it takes the workdir, runs
// --takeover-exec, listens on the same address, and a file handle the first server gave
// out still works; stopping it runs --release-exec. Given a signal while on standby it
// exits 0 without having listened.
func TestStandbyTakesOver(t *testing.T) {
	l := newLayout(t)
	if err := os.WriteFile(filepath.Join(l.upper, "kept.txt"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	common := []string{"--lowerdir=" + l.l1, "--upperdir=" + l.upper, "--workdir=" + l.work, "--listen=" + addr,
		"--portmap=off", "--nlm=off"}
	first := startServe(t, common...)
	c := rpctest.Dial(t, first.field("listen"))
	fh := c.Lookup(c.MountRoot(), "kept.txt")

	// A standby told to stop before it took over.
	ctx, cancel := context.WithCancel(context.Background())
	log0 := &syncBuffer{}
	done0 := make(chan int, 1)
	go func() { done0 <- run(ctx, append([]string{"serve", "--standby"}, common...), os.Stderr, log0) }()
	waitLog(t, log0, "standby: waiting for the workdir lock")
	cancel()
	select {
	case code := <-done0:
		if code != exitOK || !strings.Contains(log0.String(), "stopped while on standby") {
			t.Errorf("a standby stopped on standby: exit %d\n%s", code, log0.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a standby did not stop on its signal")
	}

	hooks := filepath.Join(t.TempDir(), "hooks")
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	log := &syncBuffer{}
	done := make(chan int, 1)
	args := append([]string{"serve", "--standby",
		"--takeover-exec=echo took $OVLNFS_LISTEN >> " + hooks,
		"--release-exec=echo released >> " + hooks}, common...)
	go func() { done <- run(ctx, args, os.Stderr, log) }()
	waitLog(t, log, "standby: waiting for the workdir lock")
	time.Sleep(500 * time.Millisecond)
	if strings.Contains(log.String(), "ovlnfs started") {
		t.Fatalf("the standby started while the first server holds the workdir:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "holder_pid="+strconv.Itoa(os.Getpid())) {
		t.Errorf("the standby does not say who holds the workdir:\n%s", log.String())
	}
	if code := first.stop(); code != exitOK {
		t.Fatalf("first server: exit %d", code)
	}
	waitLog(t, log, "ovlnfs started")
	if b, _ := os.ReadFile(hooks); string(b) != "took "+addr+"\n" {
		t.Errorf("after the takeover the hooks wrote %q", b)
	}
	c2 := rpctest.Dial(t, addr)
	if got := c2.Getattr(fh).Size; got != 5 {
		t.Errorf("the first server's handle on the standby: size %d", got)
	}
	if data, _ := c2.Read(fh, 0, 100); string(data) != "kept\n" {
		t.Errorf("the first server's handle on the standby reads %q", data)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("the standby: exit %d\n%s", code, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the standby did not stop")
	}
	if b, _ := os.ReadFile(hooks); string(b) != "took "+addr+"\nreleased\n" {
		t.Errorf("after the stop the hooks wrote %q", b)
	}
}

func waitLog(t *testing.T, log *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(log.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, log.String())
		}
	}
}
