// Package testenv holds what the real-client tests share: prerequisite checks that fail in
// CI and skip loudly elsewhere, building the ovlnfs binary, and running `ovlnfs serve` as a
// child process that every test stops.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether the suite runs in CI, where a missing prerequisite is a failure.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false"
}

// Missing stops the test because a prerequisite is absent: a failure in CI (nothing may be
// silently skipped there), a loud skip elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (install with: sudo .ci/run --deps-only)"
	if InCI() {
		t.Fatalf("PREREQUISITE MISSING in CI: %s", msg)
	}
	t.Skipf("SKIPPED, PREREQUISITE MISSING: %s", msg)
}

// RequireCommands checks that every command is on PATH.
func RequireCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Missing(t, "command %q not found", n)
		}
	}
}

// RequireRoot checks for root, which network namespaces and kernel mounts need.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "this test needs root")
	}
}

// RepoRoot is the module root, found from this source file.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// Main runs a test package that uses BuildOvlnfs and removes the binary afterwards: call
// it from the package's TestMain as os.Exit(testenv.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	return code
}

// BuildOvlnfs builds cmd/ovlnfs once per test binary into a temporary directory, which
// Main removes.
func BuildOvlnfs(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ovlnfs-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		buildPath = filepath.Join(dir, "ovlnfs")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/ovlnfs")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ovlnfs: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// startTimeout bounds a server's start. Starting over an upper with tens of thousands of
// objects and no moves index writes the index first (a file per object): seconds on an
// idle machine, several times that on a loaded one. It is a liveness bound, not a speed
// check.
const startTimeout = 60 * time.Second

// FreePort returns a port on 127.0.0.1 that was free for TCP and UDP a moment ago (the
// server answers MOUNT over UDP on its TCP port).
func FreePort(t testing.TB) int {
	t.Helper()
	for try := 0; ; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
		if try == 20 {
			t.Fatalf("no port free for both TCP and UDP: %v", err)
		}
	}
}

// Server is a running `ovlnfs serve` child process.
type Server struct {
	cmd     *exec.Cmd
	logMu   sync.Mutex
	log     bytes.Buffer
	started chan struct{}
	exited  chan struct{}
	waitErr error
	killed  bool // by Kill: its exit status is no failure
	// quiet leaves the log out of a failed test's output (SetLogOnFailure).
	quiet atomic.Bool
}

// StartServer runs `prefix... ovlnfs serve args...` (prefix e.g. "ip netns exec NS"), waits
// for its "ovlnfs started" log line and registers a cleanup that stops it. The server's log
// is attached to the test output when the test fails.
func StartServer(t testing.TB, binary string, prefix []string, args ...string) *Server {
	t.Helper()
	s := LaunchServer(t, binary, prefix, args...)
	select {
	case <-s.started:
	case <-s.exited:
		t.Fatalf("ovlnfs serve exited at startup: %v\n%s", s.waitErr, s.Log())
	case <-time.After(startTimeout):
		t.Fatalf("ovlnfs serve did not start within %v\n%s", startTimeout, s.Log())
	}
	return s
}

// LaunchServer is StartServer without the wait for the start (a standby's starts only
// when it takes over): Started says when it has.
func LaunchServer(t testing.TB, binary string, prefix []string, args ...string) *Server {
	t.Helper()
	argv := append(append(append([]string{}, prefix...), binary, "serve"), args...)
	s := &Server{started: make(chan struct{}), exited: make(chan struct{})}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	// The server dies with the test process even when a timeout's panic skips the
	// cleanups: a test stops every process it starts.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout = os.Stdout
	startErr := make(chan error, 1)
	go func() {
		// Pdeathsig comes when the thread that started the child ends, not the process:
		// this goroutine keeps its thread (locked, never unlocked) until the server has
		// exited, so that the signal means the test process died. (Started from any
		// thread, a server was killed when the runtime ended that thread, as it ends one
		// a goroutine locked and left.)
		runtime.LockOSThread()
		if err := s.cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			s.logMu.Unlock()
			if strings.Contains(line, "ovlnfs started") {
				once.Do(func() { close(s.started) })
			}
		}
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := <-startErr; err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	t.Cleanup(func() {
		if code, err := s.Stop(10 * time.Second); !s.killed && (err != nil || code != 0) {
			t.Errorf("ovlnfs serve did not stop cleanly: exit %d, %v", code, err)
		}
		if t.Failed() && !s.quiet.Load() {
			t.Logf("ovlnfs server log (debug lines left out):\n%s", withoutDebug(s.Log()))
		}
	})
	return s
}

// Started is closed once the server has logged its start.
func (s *Server) Started() <-chan struct{} { return s.started }

// Log returns what the server logged so far.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// Stop sends SIGTERM and waits for the exit status; after timeout it kills. Calling it
// again returns the first result.
func (s *Server) Stop(timeout time.Duration) (int, error) {
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(timeout):
			_ = s.cmd.Process.Kill()
			<-s.exited
			return -1, fmt.Errorf("killed after %v without exiting on SIGTERM", timeout)
		}
	}
	if s.cmd.ProcessState == nil {
		return -1, s.waitErr
	}
	return s.cmd.ProcessState.ExitCode(), nil
}

// SetLogOnFailure says whether the server's log is attached to the output of a failed
// test (the default); a test that starts hundreds of servers keeps only the last few.
func (s *Server) SetLogOnFailure(on bool) { s.quiet.Store(!on) }

// Kill sends SIGKILL, as a crash would end the server, and waits until it has exited.
func (s *Server) Kill() {
	s.killed = true
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// Signal sends sig to the server process (SIGHUP: re-read its exports file). A prefix
// like "ip netns exec NS" execs the server in its own place, so the process is the server.
func (s *Server) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Exited is closed once the server process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Run runs a command with a timeout and returns its combined output.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func withoutDebug(log string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(log, "\n") {
		if !strings.Contains(line, "level=DEBUG") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// WriteFiles creates each file (path relative to root, parents made as needed) with its
// content.
func WriteFiles(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
