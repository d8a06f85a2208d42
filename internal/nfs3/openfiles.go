package nfs3

import (
	"container/list"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// The open-file cache. Opening a union file is a lookup per component per layer; with
// 1 MiB transfers a READ stream would pay one per MiB, and the kernel's read-ahead state
// would die with every close. openFiles keeps the union files READ (read-only), WRITE
// (read-write) and COMMIT open between calls. Every read and write is positional, so
// concurrent calls on one file share it safely. Files close when idle, when the cache is
// full, and as soon as their name is removed or renamed (a cached descriptor would keep a
// removed file's space, or answer for a name that now means another file). The union's
// files follow copy-up themselves, so a cached read-only file of a lower object reads the
// upper copy once a WRITE made one.

const (
	maxOpenFiles = 128
	openFileIdle = 5 * time.Second
)

// openFile is what the cache hands out; Release gives it back.
type openFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	// LayerStat is fstat of the descriptor: the layer object's own attributes.
	LayerStat() (syscall.Stat_t, error)
	// layerFile is the layer descriptor reads go through, for splicing its pages.
	layerFile() (*os.File, bool)
	Release()
}

type openKey struct {
	path     string
	writable bool
}

type openEntry struct {
	cache    *openFiles
	key      openKey
	f        billy.File
	refs     int           // guarded by cache.mu
	lastUsed time.Time     // guarded by cache.mu
	recency  *list.Element // e's place in cache.recency; guarded by cache.mu
	gone     bool          // forgotten or evicted while in use: close on last release; guarded by cache.mu
}

// openFiles is the cache. Lock order: mu is a leaf; no file is opened or synced under
// it (closes are, and do not block on a local filesystem).
type openFiles struct {
	open func(path string, flag int) (billy.File, error)

	mu      sync.Mutex
	entries map[openKey]*openEntry // guarded by mu
	recency *list.List             // of *openEntry, most recently used first; guarded by mu
	timer   *time.Timer            // guarded by mu
	closed  bool                   // guarded by mu
}

func newOpenFiles(open func(path string, flag int) (billy.File, error)) *openFiles {
	return &openFiles{open: open, entries: make(map[openKey]*openEntry), recency: list.New()}
}

// get returns path opened read-only or read-write. A cached file is handed out only while
// its descriptor is still the layer object the call resolved (want, from the union's
// Lstat; nil to skip the check): a file replaced in a layer behind the server's back is
// opened again, never read through a descriptor of the old one. The check's fstat of the
// descriptor comes back too (nil when there was none), for a caller that needs the
// file's attributes as they were just before its I/O.
func (c *openFiles) get(path string, writable bool, want os.FileInfo) (openFile, *syscall.Stat_t, error) {
	key := openKey{path, writable}
	c.mu.Lock()
	if e, ok := c.entries[key]; ok && !c.closed {
		e.refs++
		c.usedLocked(e)
		c.mu.Unlock()
		if ok, st := e.isObject(want); ok {
			return e, st, nil
		}
		c.mu.Lock()
		if c.entries[key] == e {
			c.dropLocked(e)
		}
		c.mu.Unlock()
		e.Release()
	} else {
		c.mu.Unlock()
	}

	flag := syscall.O_RDONLY
	if writable {
		flag = syscall.O_RDWR
	}
	f, err := c.open(path, flag)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		// Not cached: closed on release.
		return &openEntry{cache: c, key: key, f: f, refs: 1, gone: true}, nil, nil
	}
	if e, ok := c.entries[key]; ok {
		// Another call opened it meanwhile; keep theirs.
		f.Close()
		e.refs++
		c.usedLocked(e)
		return e, nil, nil
	}
	e := &openEntry{cache: c, key: key, f: f, refs: 1, lastUsed: time.Now()}
	c.entries[key] = e
	e.recency = c.recency.PushFront(e)
	c.evictLocked()
	if c.timer == nil {
		c.timer = time.AfterFunc(openFileIdle, c.sweep)
	}
	return e, nil, nil
}

// usedLocked marks e as just used.
func (c *openFiles) usedLocked(e *openEntry) {
	e.lastUsed = time.Now()
	if e.recency != nil {
		c.recency.MoveToFront(e.recency)
	}
}

// evictLocked drops least recently used entries while the cache is over its bound.
func (c *openFiles) evictLocked() {
	for len(c.entries) > maxOpenFiles {
		c.dropLocked(c.recency.Back().Value.(*openEntry))
	}
}

func (c *openFiles) dropLocked(e *openEntry) {
	delete(c.entries, e.key)
	if e.recency != nil {
		c.recency.Remove(e.recency)
		e.recency = nil
	}
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

// forget drops the files at path and, for a directory, below it ("" is the root).
func (c *openFiles) forget(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prefix := path + "/"
	for _, e := range c.entries {
		if path == "" || e.key.path == path || strings.HasPrefix(e.key.path, prefix) {
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

func (e *openEntry) Release() {
	c := e.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	c.usedLocked(e)
	if e.refs == 0 && e.gone {
		e.f.Close()
	}
}

func (e *openEntry) ReadAt(b []byte, off int64) (int, error) { return e.f.ReadAt(b, off) }

func (e *openEntry) WriteAt(b []byte, off int64) (int, error) {
	w, ok := e.f.(io.WriterAt)
	if !ok {
		return 0, syscall.EBADF
	}
	return w.WriteAt(b, off)
}

// isObject reports whether e's descriptor is the layer object want describes, with that
// object's attributes when it has them: want's own where the descriptor's object is known
// without an fstat (a union file's LayerObject), else the descriptor's fstat.
func (e *openEntry) isObject(want os.FileInfo) (bool, *syscall.Stat_t) {
	if want == nil {
		return true, nil
	}
	dev, ino, ok := billyunion.LayerObject(want)
	if !ok {
		return true, nil
	}
	if lo, ok := e.f.(interface {
		LayerObject() (dev, ino uint64, err error)
	}); ok {
		// The descriptor's object, known without an fstat: want's attributes, from the
		// lookup this call just made of that object, are as fresh as one.
		d, i, err := lo.LayerObject()
		if err != nil || d != dev || i != ino {
			return false, nil
		}
		st, _ := billyunion.StatOf(want) // a union FileInfo, as LayerObject(want) was
		cp := *st
		return true, &cp
	}
	st, err := e.LayerStat()
	if err != nil {
		return false, nil
	}
	return st.Dev == dev && st.Ino == ino, &st
}

func (e *openEntry) LayerStat() (syscall.Stat_t, error) {
	s, ok := e.f.(interface {
		LayerStat() (syscall.Stat_t, error)
	})
	if !ok {
		return syscall.Stat_t{}, syscall.ENOTSUP
	}
	return s.LayerStat()
}

// layerFile is the layer descriptor e reads through now, valid until e is released;
// false when e's file has none.
func (e *openEntry) layerFile() (*os.File, bool) {
	l, ok := e.f.(interface{ LayerFile() *os.File })
	if !ok {
		return nil, false
	}
	return l.LayerFile(), true
}

func (e *openEntry) Sync() error {
	s, ok := e.f.(interface{ Sync() error })
	if !ok {
		return syscall.ENOTSUP
	}
	return s.Sync()
}
