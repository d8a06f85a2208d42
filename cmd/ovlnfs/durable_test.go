package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestDurableAcrossKill writes with FILE_SYNC to a server process, SIGKILLs it as soon as
// the reply is in, restarts it on the same layers and reads the data back over NFS; the
// write verifier must differ between the two runs, so clients resend uncommitted writes.
func TestDurableAcrossKill(t *testing.T) {
	root := t.TempDir()
	l := layout{root: root, l1: filepath.Join(root, "l1"), l2: filepath.Join(root, "l2"),
		upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work")}
	for _, d := range []string{l.l1, l.l2, l.upper, l.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(l.l1, "f"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("durable!"), 8192)

	addr := freePort(t)
	srv := startChildServer(t, l, addr)
	c := rpctest.Dial(t, addr)
	fh := c.Lookup(c.MountRoot(), "f")
	_, _, verf1 := c.Write(fh, 0, data, rpctest.FileSync)
	if err := srv.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()
	c.Conn().Close()

	// The workdir lock is released with the killed process.
	startChildServer(t, l, addr)
	c2 := rpctest.Dial(t, addr)
	fh = c2.Lookup(c2.MountRoot(), "f")
	_, _, verf2 := c2.Write(fh, uint64(len(data)), []byte("+"), rpctest.Unstable)
	if bytes.Equal(verf1, verf2) {
		t.Errorf("write verifier %x is the same across a restart", verf1)
	}
	got, err := os.ReadFile(filepath.Join(l.upper, "f"))
	if err != nil || !bytes.Equal(got, append(append([]byte(nil), data...), '+')) {
		t.Errorf("after kill and restart the upper file has %d bytes (%v), want %d", len(got), err, len(data)+1)
	}
}

// startChildServer runs this test binary as `ovlnfs serve` (see TestMain) and stops it at
// cleanup.
func startChildServer(t *testing.T, l layout, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--lowerdir="+l.l1+":"+l.l2, "--upperdir="+l.upper,
		"--workdir="+l.work, "--listen="+addr)
	cmd.Env = append(os.Environ(), childServerEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	started := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		var seen bytes.Buffer
		signalled := false
		for {
			n, err := stderr.Read(buf)
			seen.Write(buf[:n])
			if !signalled && strings.Contains(seen.String(), "ovlnfs started") {
				close(started)
				signalled = true
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("child server did not start")
	}
	return cmd
}

const childServerEnv = "OVLNFS_TEST_CHILD_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(childServerEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], io.Discard, os.Stderr))
	}
	os.Exit(m.Run())
}
