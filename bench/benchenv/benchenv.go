// Package benchenv is what the benchmark programs under bench/ share to run the server
// they measure: building ovlnfs (from the working tree or a git revision), a free
// loopback port, a process's CPU seconds, the tail of a log.
package benchenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// BuildOvlnfs returns an ovlnfs binary and says where it came from: given, when set;
// else cmd/ovlnfs built into work from git revision rev, or from the working tree when
// rev is "".
func BuildOvlnfs(given, rev, work string) (bin, from string, err error) {
	if given != "" {
		return given, "a given binary (" + given + ")", nil
	}
	bin = filepath.Join(work, "ovlnfs")
	srcDir := "."
	if rev != "" {
		srcDir = filepath.Join(work, "src")
		if err := os.MkdirAll(srcDir, 0o755); err != nil {
			return "", "", err
		}
		archive := exec.Command("sh", "-c", `git archive "$1" | tar -x -C "$2"`, "sh", rev, srcDir)
		if o, err := archive.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("git archive %s: %v %s", rev, err, o)
		}
		full, _ := exec.Command("git", "rev-parse", "--short", rev).Output()
		from = "commit " + strings.TrimSpace(string(full))
	} else {
		d, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
		from = "the working tree at " + strings.TrimSpace(string(d))
	}
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ovlnfs")
	cmd.Dir = srcDir
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/ovlnfs: %v\n%s", err, o)
	}
	return bin, from, nil
}

// FreePort returns a port on 127.0.0.1 that was free for TCP and UDP a moment ago.
func FreePort() (int, error) {
	// ovlnfs serve binds MOUNT over UDP on its TCP port too: the port must be free for both.
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
		lastErr = err
	}
	return 0, fmt.Errorf("no port free for both TCP and UDP: %v", lastErr)
}

// LoadAverage is the machine's 1-minute load average, as /proc/loadavg gives it.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

// CPUSeconds is the user+system CPU time of process pid, 0 if it cannot be read.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the ")" that ends the command name: utime is the 12th, stime
	// the 13th (fields 14 and 15 of proc(5)).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// Tail is the last 2,000 bytes of the file at path, for error messages.
func Tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Cleanups are the undo steps of a benchmark run (servers, mounts, scratch directories),
// run in reverse order once, at the end or on a signal.
type Cleanups struct {
	mu sync.Mutex
	fs []func() // guarded by mu
}

// Add registers f.
func (c *Cleanups) Add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fs = append(c.fs, f)
}

// Run runs what was added, last first, and forgets it.
func (c *Cleanups) Run() {
	c.mu.Lock()
	fs := c.fs
	c.fs = nil
	c.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
