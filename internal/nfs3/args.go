package nfs3

import (
	"errors"
	"strings"
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// Arguments the procedures share: file handles, diropargs3, and the checks of a name.

// maxHandleSize is NFSv3's bound on a file handle (RFC 1813 section 2.4).
const maxHandleSize = 64

// maxNameSize bounds a name or a symlink target before it reaches the union, which
// refuses what a layer cannot store.
const maxNameSize = 4096

var (
	errHandleTooLong = errors.New("nfs3: file handle over 64 bytes")
	errNameTooLong   = errors.New("nfs3: name over 4096 bytes")
	errBadTimeHow    = errors.New("nfs3: unknown time_how")
	errBadEnum       = errors.New("nfs3: unknown enum value")
)

// handle reads an nfs_fh3.
func (rq *request) handle() []byte { return rq.args.OpaqueMax(maxHandleSize, errHandleTooLong) }

// name reads a filename3 or nfspath3.
func (rq *request) name() string { return string(rq.args.OpaqueMax(maxNameSize, errNameTooLong)) }

// dirArgs is a decoded diropargs3 with its directory resolved.
type dirArgs struct {
	elems []string
	dir   string // the directory's union path
	st    *syscall.Stat_t
	name  string
	err   error // the directory did not resolve
}

func (rq *request) dirArgs() dirArgs {
	fh, name := rq.handle(), rq.name()
	d := dirArgs{name: name}
	if rq.args.Err() == nil {
		d.elems, d.dir, d.st, d.err = rq.statHandle(fh)
	}
	return d
}

func (d *dirArgs) childElems() []string {
	return append(append(make([]string, 0, len(d.elems)+1), d.elems...), d.name)
}

func (d *dirArgs) child() string { return unionPath(d.childElems()) }

// existingName checks the name of an entry to look up or remove: "/" names nothing here.
func existingName(name string) error {
	if err := billyunion.ValidName(name); err == syscall.EINVAL {
		return syscall.ENOENT
	} else {
		return err
	}
}

// newName refuses a name no new entry can have. "." and ".." exist already.
func newName(name string) error {
	if name == "." || name == ".." {
		return syscall.EEXIST
	}
	return billyunion.ValidName(name)
}

// checkDir makes sure the directory of a diropargs3 is one, and returns its stat (the
// pre-operation attributes of a change).
func (rq *request) checkDir(d *dirArgs) (*syscall.Stat_t, error) {
	if d.err != nil {
		return nil, d.err
	}
	if !isDir(d.st) {
		return d.st, syscall.ENOTDIR
	}
	return d.st, nil
}

// checkNewEntry checks a diropargs3 that names an entry to make: the directory is one, the
// name can be an entry's, and the caller may add to the directory (unless the name exists
// already: what that means is the procedure's to say). It returns the directory's stat.
func (rq *request) checkNewEntry(d *dirArgs) (*syscall.Stat_t, error) {
	dirSt, err := rq.checkDir(d)
	if err == nil {
		err = newName(d.name)
	}
	if err == nil && rq.readOnly {
		err = syscall.EROFS // before any permission: a read-only filesystem refuses all
	}
	if err == nil && rq.statOrNil(d.child()) == nil {
		err = rq.who.mayChangeDir(dirSt)
		if err == nil {
			err = rq.appleDoubleName(d.name)
		}
	}
	return dirSt, err
}

// appleDoubleName refuses a new AppleDouble or .DS_Store name when the server refuses them
// (Config.RefuseAppleDouble).
func (rq *request) appleDoubleName(name string) error {
	if rq.s.refuseAppleDouble && (strings.HasPrefix(name, "._") || name == ".DS_Store") {
		return syscall.EACCES
	}
	return nil
}
