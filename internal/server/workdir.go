package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lockFileName is the file in the workdir whose flock marks the workdir as in use. The
// kernel holds the lock; it goes away with the process however the process ends, so there
// is never a stale lock to clean up.
const LockFileName = "ovlnfs.lock"

// workdirLock is an exclusive lock on a workdir.
type workdirLock struct{ file *os.File }

// ErrWorkdirBusy is returned when another process holds the workdir.
var ErrWorkdirBusy = errors.New("workdir in use")

// lockWorkdir takes the workdir for this process (creating it first when create is set), failing at once if another ovlnfs holds
// it. The holder's pid is written into the file only to make the refusal message useful.
func lockWorkdir(workdir string, create bool) (*workdirLock, error) {
	if create {
		if err := os.Mkdir(workdir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("cannot create workdir %s: %w", workdir, err)
		}
	}
	path := filepath.Join(workdir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			if pid := strings.TrimSpace(string(holder)); pid != "" {
				return nil, fmt.Errorf("%w by ovlnfs pid %s", ErrWorkdirBusy, pid)
			}
			return nil, ErrWorkdirBusy
		}
		return nil, err
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &workdirLock{file: f}, nil
}

// standbyPoll is how often a standby tries a busy workdir's lock again: a failover takes
// at most this long more than the previous holder's end. (A blocking flock could not be
// given up when the standby is told to stop.)
const standbyPoll = 200 * time.Millisecond

// waitWorkdir takes the workdir's lock as lockWorkdir does, but while another process
// holds it, waits (calling waiting once first) until it is free or ctx ends.
func waitWorkdir(ctx context.Context, workdir string, create bool, waiting func(workdir, holder string)) (*workdirLock, error) {
	told := false
	for {
		l, err := lockWorkdir(workdir, create)
		if !errors.Is(err, ErrWorkdirBusy) {
			return l, err
		}
		if !told && waiting != nil {
			holder, _ := os.ReadFile(filepath.Join(workdir, LockFileName))
			waiting(workdir, strings.TrimSpace(string(holder)))
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(standbyPoll):
		}
	}
}

// release gives the workdir up. The file stays: removing it would race with a process
// that has just opened it and is about to lock it.
func (l *workdirLock) release() error {
	_ = l.file.Truncate(0)
	return l.file.Close()
}

// HoldWorkdir takes a workdir's lock as a server does, for a tool that changes the
// workspace while no server serves it (ovlnfs check --repair); an error wrapping
// ErrWorkdirBusy names the server that holds it.
func HoldWorkdir(workdir string) (release func() error, err error) {
	l, err := lockWorkdir(workdir, false)
	if err != nil {
		return nil, err
	}
	return l.release, nil
}
