package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSystemdNotify: under a Type=notify unit (NOTIFY_SOCKET set), serve says READY=1
// with its pid once it serves, and STOPPING=1 when it stops.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	l := newLayout(t)
	r := startServe(t, "--lowerdir="+l.l1, "--listen=127.0.0.1:0", "--portmap=off", "--nlm=off")
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	if got := next(); !strings.HasPrefix(got, "READY=1\nMAINPID=") {
		t.Errorf("first notification %q, want READY=1 and MAINPID", got)
	}
	if code := r.stop(); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if got := next(); got != "STOPPING=1" {
		t.Errorf("notification at the stop %q, want STOPPING=1", got)
	}
}
