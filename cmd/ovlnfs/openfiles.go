package main

import (
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
)

// go-nfs opens and closes the file for every READ and WRITE: with 1 MiB transfers that is
// an open (a union lookup) per MiB, and the kernel's read-ahead state dies with each close.
// openFiles keeps the union files go-nfs opens for READ (read-only) and WRITE (read-write)
// and hands go-nfs views with their own offset, so concurrent requests on one file never
// share a seek position (every read and write is positional). Files close when idle, when
// the cache is full, and as soon as their name is removed or renamed (a cached descriptor
// would keep a removed file's space, or answer for a name that now means another file).
// The union's files follow copy-up themselves, so a cached read-only view of a lower file
// sees the upper copy once a WRITE made one.

const (
	maxOpenFiles = 128
	openFileIdle = 5 * time.Second
)

type openKey struct {
	path     string
	writable bool
}

type openEntry struct {
	key      openKey
	f        billy.File
	refs     int
	lastUsed time.Time
	gone     bool // forgotten or evicted while in use: close on last release
}

type openFiles struct {
	open func(path string, flag int) (billy.File, error)

	mu      sync.Mutex
	entries map[openKey]*openEntry
	timer   *time.Timer
	closed  bool
}

func newOpenFiles(open func(path string, flag int) (billy.File, error)) *openFiles {
	return &openFiles{open: open, entries: make(map[openKey]*openEntry)}
}

// get returns a view of path opened read-only or read-write.
func (c *openFiles) get(path string, writable bool) (billy.File, error) {
	key := openKey{path, writable}
	c.mu.Lock()
	if e, ok := c.entries[key]; ok && !c.closed {
		e.refs++
		e.lastUsed = time.Now()
		c.mu.Unlock()
		return &fileView{cache: c, e: e}, nil
	}
	c.mu.Unlock()

	flag := syscall.O_RDONLY
	if writable {
		flag = syscall.O_RDWR
	}
	f, err := c.open(path, flag)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return f, nil // not cached: the caller's Close closes it
	}
	if e, ok := c.entries[key]; ok {
		// Another request opened it meanwhile; keep theirs.
		f.Close()
		e.refs++
		e.lastUsed = time.Now()
		return &fileView{cache: c, e: e}, nil
	}
	e := &openEntry{key: key, f: f, refs: 1, lastUsed: time.Now()}
	c.entries[key] = e
	c.evictLocked()
	if c.timer == nil {
		c.timer = time.AfterFunc(openFileIdle, c.sweep)
	}
	return &fileView{cache: c, e: e}, nil
}

// evictLocked drops least recently used entries while the cache is over its bound.
func (c *openFiles) evictLocked() {
	for len(c.entries) > maxOpenFiles {
		var oldest *openEntry
		for _, e := range c.entries {
			if oldest == nil || e.lastUsed.Before(oldest.lastUsed) {
				oldest = e
			}
		}
		c.dropLocked(oldest)
	}
}

func (c *openFiles) dropLocked(e *openEntry) {
	delete(c.entries, e.key)
	e.gone = true
	if e.refs == 0 {
		e.f.Close()
	}
}

// sweep closes what has been idle for openFileIdle.
func (c *openFiles) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = nil
	now := time.Now()
	for _, e := range c.entries {
		if e.refs == 0 && now.Sub(e.lastUsed) >= openFileIdle {
			c.dropLocked(e)
		}
	}
	if len(c.entries) > 0 && !c.closed {
		c.timer = time.AfterFunc(openFileIdle, c.sweep)
	}
}

// forget drops the files at path and, for a directory, below it.
func (c *openFiles) forget(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prefix := path + "/"
	for _, e := range c.entries {
		if e.key.path == path || strings.HasPrefix(e.key.path, prefix) || path == "." || path == "" {
			c.dropLocked(e)
		}
	}
}

// closeAll closes every cached file; later gets open uncached files.
func (c *openFiles) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	for _, e := range c.entries {
		c.dropLocked(e)
	}
}

func (c *openFiles) release(e *openEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	e.lastUsed = time.Now()
	if e.refs == 0 && e.gone {
		e.f.Close()
	}
}

// fileView is one go-nfs request's use of a cached file: its own offset, positional I/O.
type fileView struct {
	cache  *openFiles
	e      *openEntry
	mu     sync.Mutex
	off    int64
	closed bool
}

func (v *fileView) Name() string { return v.e.f.Name() }

func (v *fileView) Read(b []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n, err := v.e.f.ReadAt(b, v.off)
	v.off += int64(n)
	return n, err
}

func (v *fileView) ReadAt(b []byte, off int64) (int, error) { return v.e.f.ReadAt(b, off) }

func (v *fileView) Write(b []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	w, ok := v.e.f.(io.WriterAt)
	if !ok {
		return 0, syscall.EBADF
	}
	n, err := w.WriteAt(b, v.off)
	v.off += int64(n)
	return n, err
}

func (v *fileView) Seek(off int64, whence int) (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += v.off
	default:
		// The end moves under concurrent writers; go-nfs never asks for it.
		return v.off, syscall.EINVAL
	}
	if off < 0 {
		return v.off, syscall.EINVAL
	}
	v.off = off
	return off, nil
}

func (v *fileView) Sync() error {
	s, ok := v.e.f.(interface{ Sync() error })
	if !ok {
		return syscall.ENOTSUP
	}
	return s.Sync()
}

func (v *fileView) Truncate(size int64) error { return v.e.f.Truncate(size) }
func (v *fileView) Lock() error               { return v.e.f.Lock() }
func (v *fileView) Unlock() error             { return v.e.f.Unlock() }

func (v *fileView) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return syscall.EBADF
	}
	v.closed = true
	v.cache.release(v.e)
	return nil
}
