package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	stableFileSync = 2
	stableDataSync = 1
)

// write sends WRITE3args and returns the reply's committed level and verifier.
func (c *rpcClient) write(fh []byte, off uint64, data []byte, stable uint32) (committed, xid uint32, verf []byte) {
	c.t.Helper()
	args := opaqueArg(fh)
	args = binary.BigEndian.AppendUint64(args, off)
	args = binary.BigEndian.AppendUint32(args, uint32(len(data)))
	args = binary.BigEndian.AppendUint32(args, stable)
	args = append(args, opaqueArg(data)...)
	reply := c.call(progNFS, nfsVersion, procWrite, args)
	r := accepted(c.t, reply, acceptSuccess)
	if st := r.uint32(); st != 0 {
		c.t.Fatalf("WRITE status %d", st)
	}
	n := len(reply)
	return binary.BigEndian.Uint32(reply[n-12:]), binary.BigEndian.Uint32(reply), append([]byte(nil), reply[n-8:]...)
}

func (c *rpcClient) commit(fh []byte) (xid uint32, verf []byte) {
	c.t.Helper()
	args := append(opaqueArg(fh), make([]byte, 12)...) // offset 0, count 0: the whole file
	reply := c.call(progNFS, nfsVersion, procCommit, args)
	r := accepted(c.t, reply, acceptSuccess)
	if st := r.uint32(); st != 0 {
		c.t.Fatalf("COMMIT status %d", st)
	}
	return binary.BigEndian.Uint32(reply), append([]byte(nil), reply[len(reply)-8:]...)
}

func fsyncLogged(log string, xid uint32) bool {
	return logLineWith(log, "fsync before reply", fmt.Sprintf("xid=%d ", xid))
}

func logLineWith(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestWriteStability checks what each WRITE stability level and COMMIT promise: the
// server's own log line "fsync before reply" is written after a successful fsync and
// before the reply goes out, so finding it once the reply is in hand proves the order.
func TestWriteStability(t *testing.T) {
	s := startTestServer(t, map[string]string{"f": "lower content\n"}, "--log-level=debug")
	c := dialRPC(t, s.addr)
	fh := c.lookup(c.mountRoot(), "f")

	committed, xid, verf := c.write(fh, 0, []byte("unstable"), stableUnstable)
	if committed != stableUnstable {
		t.Errorf("UNSTABLE WRITE answered committed=%d; it was not synced", committed)
	}
	if fsyncLogged(s.log.String(), xid) {
		t.Errorf("UNSTABLE WRITE was fsynced")
	}
	for _, stable := range []uint32{stableDataSync, stableFileSync} {
		committed, xid, v := c.write(fh, 8, []byte("stable"), stable)
		if committed != stableFileSync {
			t.Errorf("stable=%d WRITE answered committed=%d", stable, committed)
		}
		if !fsyncLogged(s.log.String(), xid) {
			t.Errorf("stable=%d WRITE reply came without an fsync before it", stable)
		}
		if !bytes.Equal(v, verf) {
			t.Errorf("verifier changed within one server run: %x then %x", verf, v)
		}
	}
	xid, v := c.commit(fh)
	if !fsyncLogged(s.log.String(), xid) {
		t.Errorf("COMMIT reply came without an fsync before it")
	}
	if !bytes.Equal(v, verf) {
		t.Errorf("COMMIT verifier %x differs from WRITE's %x", v, verf)
	}
	if b, err := os.ReadFile(filepath.Join(s.layout.upper, "f")); err != nil || string(b) != "unstablestable" {
		t.Errorf("upper file = %q, %v", b, err)
	}
}

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
	c := dialRPC(t, addr)
	fh := c.lookup(c.mountRoot(), "f")
	_, _, verf1 := c.write(fh, 0, data, stableFileSync)
	if err := srv.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()
	c.conn.Close()

	// The workdir lock is released with the killed process.
	startChildServer(t, l, addr)
	c2 := dialRPC(t, addr)
	fh = c2.lookup(c2.mountRoot(), "f")
	_, _, verf2 := c2.write(fh, uint64(len(data)), []byte("+"), stableUnstable)
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
