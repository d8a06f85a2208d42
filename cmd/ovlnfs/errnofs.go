package main

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
)

// go-nfs turns most errors into NFS3ERR_IO or NFS3ERR_ACCES, which loses what a client
// needs (a WRITE that copies a lower file up into a full upper must say NOSPC, not ACCES).
// The namespace and attribute procedures are answered by the front end itself
// (nfsproc.go); for the ones go-nfs still answers, errnoFS records the errno of failed
// calls keyed by the object's path, and the RPC front end, which sees the reply go-nfs
// wrote for the same call, takes the record and puts the real status on the wire.

// errnoKey identifies one filesystem call by what go-nfs passes to it.
type errnoKey struct {
	op       string
	from, to string
}

type errnoRecord struct {
	errno syscall.Errno
	at    time.Time
}

// errnoRecorder is the side channel between errnoFS and the front end.
type errnoRecorder struct {
	mu      sync.Mutex
	records map[errnoKey]errnoRecord
}

// maxErrnoRecords bounds the recorder: a record whose reply never came (the connection
// died) would otherwise stay forever.
const maxErrnoRecords = 4096

// errnoRecordTTL is how long a record stays meaningful; a reply is written microseconds
// after the call fails.
const errnoRecordTTL = time.Minute

func newErrnoRecorder() *errnoRecorder {
	return &errnoRecorder{records: make(map[errnoKey]errnoRecord)}
}

func (r *errnoRecorder) record(key errnoKey, err error) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.records) >= maxErrnoRecords {
		for k, v := range r.records {
			if now.Sub(v.at) > errnoRecordTTL {
				delete(r.records, k)
			}
		}
		if len(r.records) >= maxErrnoRecords {
			clear(r.records)
		}
	}
	r.records[key] = errnoRecord{errno: errno, at: now}
}

// take returns and forgets the errno recorded for key, 0 if none.
func (r *errnoRecorder) take(key errnoKey) syscall.Errno {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.records[key]
	if !ok {
		return 0
	}
	delete(r.records, key)
	if time.Since(rec.at) > errnoRecordTTL {
		return 0
	}
	return rec.errno
}

// errnoFS is the billy.Filesystem go-nfs serves: the union, with failures of the calls
// above recorded, and write capability removed when serving read-only.
type errnoFS struct {
	billy.Filesystem
	change   billy.Change // nil when the union offers none
	unix     nfs.UnixChange
	readOnly bool
	errnos   *errnoRecorder
	files    *openFiles // READ and WRITE opens, kept open between requests
}

func newErrnoFS(union billy.Filesystem, readOnly bool, errnos *errnoRecorder) *errnoFS {
	f := &errnoFS{Filesystem: union, readOnly: readOnly, errnos: errnos}
	f.files = newOpenFiles(func(path string, flag int) (billy.File, error) {
		return union.OpenFile(path, flag, 0)
	})
	f.change, _ = union.(billy.Change)
	f.unix, _ = union.(nfs.UnixChange)
	return f
}

// Capabilities drops WriteCapability for a read-only export so go-nfs answers NFS3ERR_ROFS
// itself instead of reaching the union.
func (f *errnoFS) Capabilities() billy.Capability {
	c := billy.Capabilities(f.Filesystem)
	if f.readOnly {
		c &^= billy.WriteCapability
	}
	return c
}

// The calls go-nfs makes for the procedures it still answers (READ, WRITE, READLINK,
// READDIR, READDIRPLUS, ACCESS) record their errno under the object's path.

func (f *errnoFS) Stat(name string) (os.FileInfo, error) {
	fi, err := f.Filesystem.Stat(name)
	if err != nil {
		f.errnos.record(errnoKey{op: "obj", from: name}, err)
	}
	return fi, err
}

// Open is go-nfs's READ open.
func (f *errnoFS) Open(name string) (billy.File, error) { return f.OpenFile(name, os.O_RDONLY, 0) }

// OpenFile serves plain read-only and read-write opens (READ, WRITE) from the open-file
// cache; opens that create or truncate go to the union.
func (f *errnoFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	var file billy.File
	var err error
	if flag == os.O_RDONLY || flag == os.O_RDWR {
		file, err = f.files.get(name, flag == os.O_RDWR)
	} else {
		file, err = f.Filesystem.OpenFile(name, flag, perm)
	}
	if err != nil {
		f.errnos.record(errnoKey{op: "obj", from: name}, err)
	}
	return file, err
}

func (f *errnoFS) Readlink(name string) (string, error) {
	target, err := f.Filesystem.Readlink(name)
	if err != nil {
		f.errnos.record(errnoKey{op: "obj", from: name}, err)
	}
	return target, err
}

func (f *errnoFS) ReadDir(name string) ([]os.FileInfo, error) {
	infos, err := f.Filesystem.ReadDir(name)
	if err != nil {
		f.errnos.record(errnoKey{op: "obj", from: name}, err)
	}
	return infos, err
}

func (f *errnoFS) Chmod(name string, mode os.FileMode) error {
	if f.change == nil {
		return syscall.EROFS
	}
	return f.change.Chmod(name, mode)
}

func (f *errnoFS) Lchown(name string, uid, gid int) error {
	if f.change == nil {
		return syscall.EROFS
	}
	return f.change.Lchown(name, uid, gid)
}

func (f *errnoFS) Chown(name string, uid, gid int) error {
	if f.change == nil {
		return syscall.EROFS
	}
	return f.change.Chown(name, uid, gid)
}

func (f *errnoFS) Chtimes(name string, atime, mtime time.Time) error {
	if f.change == nil {
		return syscall.EROFS
	}
	return f.change.Chtimes(name, atime, mtime)
}

func (f *errnoFS) Mknod(path string, mode, major, minor uint32) error {
	if f.unix == nil {
		return syscall.ENOTSUP
	}
	return f.unix.Mknod(path, mode, major, minor)
}

func (f *errnoFS) Mkfifo(path string, mode uint32) error {
	if f.unix == nil {
		return syscall.ENOTSUP
	}
	return f.unix.Mkfifo(path, mode)
}

func (f *errnoFS) Socket(path string) error {
	if f.unix == nil {
		return syscall.ENOTSUP
	}
	return f.unix.Socket(path)
}

// Link makes link a new name for the existing path (go-nfs's argument order).
func (f *errnoFS) Link(path, link string) error {
	if f.unix == nil {
		return syscall.ENOTSUP
	}
	return f.unix.Link(path, link)
}

// Sync flushes the union file at path to stable storage. Opening read-only is enough for
// fsync, and reaches the upper copy of a file that has one.
func (f *errnoFS) Sync(path string) error {
	file, err := f.files.get(path, false)
	if err != nil {
		return err
	}
	defer file.Close()
	s, ok := file.(interface{ Sync() error })
	if !ok {
		return syscall.ENOTSUP
	}
	return s.Sync()
}
