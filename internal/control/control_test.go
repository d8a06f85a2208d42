package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// A child of the test binary run as another user: it sends one request to the socket in
// CONTROL_TEST_CLIENT and prints the answer's error.
func TestMain(m *testing.M) {
	if sock := os.Getenv("CONTROL_TEST_CLIENT"); sock != "" {
		_, err := Call(context.Background(), sock, Request{Op: OpReset, Export: "/ws"})
		fmt.Print(err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type fakeHandler struct{ resets, commits []string }

func (h *fakeHandler) Snapshot(export, name string) (billyunion.SnapshotInfo, error) {
	return billyunion.SnapshotInfo{Name: name}, nil
}
func (h *fakeHandler) Snapshots(string) ([]billyunion.SnapshotInfo, error) { return nil, nil }
func (h *fakeHandler) RemoveSnapshot(string, string) error                 { return errors.New("no such snapshot") }
func (h *fakeHandler) Reset(export, snapshot string) error {
	h.resets = append(h.resets, export+"@"+snapshot)
	return nil
}
func (h *fakeHandler) Commit(export, into string, flatten bool, target string, progress func(done, total int)) (billyunion.CommitInfo, error) {
	h.commits = append(h.commits, fmt.Sprintf("%s %s flatten=%v target=%s", export, into, flatten, target))
	progress(1000, 2000)
	progress(2000, 2000)
	return billyunion.CommitInfo{Layer: into}, nil
}

// TestControlSocket: requests reach the handler and errors come back; the socket is mode
// 0600, a second server on it is refused, and a connection from another user (when the
// socket's mode would let one in) is refused by its credentials.
func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{}
	done := make(chan error, 1)
	go func() { done <- Serve(l, h, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		l.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st, err)
	}
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another process answers") {
		t.Errorf("a second Listen on a live socket: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Call(ctx, sock, Request{Op: OpReset, Export: "/ws", Name: "s1"}); err != nil || len(h.resets) != 1 || h.resets[0] != "/ws@s1" {
		t.Errorf("reset: %v %v", err, h.resets)
	}
	var heard []Progress
	if resp, err := CallWithProgress(ctx, sock, Request{Op: OpCommit, Export: "/ws", Name: "/l"}, func(p Progress) { heard = append(heard, p) }); err != nil || resp.Commit == nil || resp.Commit.Layer != "/l" {
		t.Errorf("commit: %+v %v", resp, err)
	}
	if len(heard) != 2 || heard[1] != (Progress{Done: 2000, Total: 2000}) {
		t.Errorf("progress heard: %v", heard)
	}
	// A flattened commit and one into another export carry their choices.
	for _, req := range []Request{{Op: OpCommit, Export: "/ws", Name: "/f", Flatten: true}, {Op: OpCommit, Export: "/ws", Name: "/t", Target: "/bob"}} {
		if _, err := Call(ctx, sock, req); err != nil {
			t.Errorf("commit %+v: %v", req, err)
		}
	}
	if want := []string{"/ws /l flatten=false target=", "/ws /f flatten=true target=", "/ws /t flatten=false target=/bob"}; !slices.Equal(h.commits, want) {
		t.Errorf("commits handled: %q, want %q", h.commits, want)
	}
	if _, err := Call(ctx, sock, Request{Op: OpRemoveSnapshot, Export: "/ws", Name: "x"}); err == nil || err.Error() != "no such snapshot" {
		t.Errorf("a failing request: %v", err)
	}
	if _, err := Call(ctx, sock, Request{Op: "format"}); err == nil || !strings.Contains(err.Error(), "unknown operation") {
		t.Errorf("an unknown operation: %v", err)
	}

	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root; this test needs it to connect as another user")
		}
		t.Skip("not root: the connection from another user is not tried")
	}
	// Let another user reach the socket through the file system, as a careless mode
	// would: its credentials still refuse it.
	for _, p := range []string{filepath.Dir(dir), dir, sock} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A copy the other user can run: the build directory is root's alone.
	bin := filepath.Join(dir, "client")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "CONTROL_TEST_CLIENT="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the client as uid 65534: %v %s", err, out)
	}
	if !strings.Contains(string(out), "uid 65534 may not control this server") {
		t.Errorf("a connection from uid 65534 got %q", out)
	}
	if len(h.resets) != 1 {
		t.Errorf("the refused connection reached the handler: %v", h.resets)
	}
}
