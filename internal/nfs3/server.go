package nfs3

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"path"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Config is what an NFSv3 server serves.
type Config struct {
	Union   *billyunion.FS
	Handles *handles.Handles
	// StatfsPath is the directory whose filesystem FSSTAT reports: the upper layer, or the
	// top lower one when read-only.
	StatfsPath string
	// ActAsCaller makes what a client creates its user's (the server must run as root to
	// give objects away); otherwise objects are the server process's.
	ActAsCaller bool
	// Admit is what the client at a call's address may do: false refuses the call
	// (AUTH_TOOWEAK), as does a secure grant (clients.Grant.Insecure false) for a call from
	// a source port of 1024 or more. Its answer may change while serving (a reload); it is
	// asked once per call.
	Admit func(remote net.Addr) (clients.Grant, bool)
	// RefuseAppleDouble refuses (ACCES) new entries named like macOS's AppleDouble
	// companions ("._name") and Finder's ".DS_Store", made or renamed to; existing ones
	// stay visible, readable, writable and removable.
	RefuseAppleDouble bool
	Logger            *slog.Logger
}

// Server answers NFSv3 calls for one export.
type Server struct {
	union   *billyunion.FS
	handles *handles.Handles
	files   *openFiles
	// pipes carry READ's data by reference (read.go).
	pipes *oncrpc.Pipes
	// cookieOrders: recent snapshots' entries in cookie order (cookies.go).
	cookieOrders *cookieOrders
	fsid         uint64 // the export's fsid in every fattr3
	readOnly     bool
	statfsPath   string
	actAsCaller  bool
	admit        func(net.Addr) (clients.Grant, bool) // Config.Admit
	// refuseAppleDouble: Config.RefuseAppleDouble.
	refuseAppleDouble bool
	// writeVerifier changes with every start, so clients resend what they had written
	// UNSTABLE and not seen committed before a restart (RFC 1813 section 3.3.7).
	writeVerifier [8]byte
	logger        *slog.Logger
}

// New builds the NFSv3 server of cfg's union.
func New(cfg Config) (*Server, error) {
	if cfg.Union == nil || cfg.Handles == nil || cfg.Admit == nil {
		return nil, errors.New("nfs3: a union, its handles and the client rules (Admit) are needed")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Each export its own fsid: the Linux client shares one superblock between mounts of
	// one server whose fsids agree.
	fsid := uint64(cfg.Handles.Export())
	if fsid == 0 {
		fsid = 1 // never 0: the one value that says nothing about the export
	}
	s := &Server{union: cfg.Union, handles: cfg.Handles, fsid: fsid, readOnly: cfg.Union.ReadOnly(),
		statfsPath: cfg.StatfsPath, actAsCaller: cfg.ActAsCaller, logger: logger,
		cookieOrders: newCookieOrders(), admit: cfg.Admit,
		refuseAppleDouble: cfg.RefuseAppleDouble}
	if _, err := rand.Read(s.writeVerifier[:]); err != nil {
		return nil, err
	}
	s.files = newOpenFiles(func(p string, flag int) (billy.File, error) { return cfg.Union.OpenFile(p, flag, 0) })
	s.pipes = oncrpc.NewPipes(TransferSize, maxPipes)
	return s, nil
}

// maxPipes bounds the pipes of READs in flight (two descriptors each); READs beyond it
// copy their data.
const maxPipes = 64

// Close closes the files kept open between calls and the idle pipes; calls after it open
// files uncached.
func (s *Server) Close() {
	s.files.closeAll()
	s.pipes.Close()
}

// namespace is the union as one principal sees it: *billyunion.FS, or the
// *billyunion.Caller whose new objects are the caller's.
type namespace interface {
	Lstat(p string) (os.FileInfo, error)
	Readlink(p string) (string, error)
	OpenFile(p string, flag int, perm os.FileMode) (billy.File, error)
	Rename(from, to string) error
	Unlink(p string) error
	Rmdir(p string) error
	Mkdir(p string, perm os.FileMode) error
	Symlink(target, link string) error
	Mknod(p string, mode, major, minor uint32) error
	Link(oldpath, newpath string) error
	Chmod(p string, mode os.FileMode) error
	Lchown(p string, uid, gid int) error
	Chtimes(p string, atime, mtime time.Time) error
	Truncate(p string, size int64) error
}

// request is one call being answered.
type request struct {
	s     *Server
	call  *oncrpc.Call
	args  *xdr.Reader
	res   *xdr.Writer // the results, in the reply
	reply *oncrpc.Reply
	who   principal // the caller as served: squashed, never anonymous
	// readOnly: nothing may be changed, the union being read-only or the client's grant
	// (an ro rule).
	readOnly bool
	// procName is the procedure's name in the dispatch table, for log lines.
	procName string
}

// procedure adapts one procedure's function to the RPC layer's Handler.
func (s *Server) procedure(name string, fn func(*request) error) oncrpc.Handler {
	procName := "NFS." + name // once, not per call
	return func(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
		grant, ok := s.admit(call.RemoteAddr)
		if !ok || !grant.Admits(call.RemoteAddr) {
			return oncrpc.ErrWeakAuth
		}
		who := servedAs(grant, call.Cred)
		rq := &request{s: s, call: call, args: call.Args, res: &reply.Writer, reply: reply,
			who: who, readOnly: s.readOnly || grant.ReadOnly, procName: procName}
		return fn(rq)
	}
}

// namespace is the union as the caller changes it: made on demand, as most calls
// change nothing.
func (rq *request) namespace() namespace {
	if rq.s.actAsCaller {
		return rq.s.union.As(rq.who.UID, rq.who.GID)
	}
	return rq.s.union
}

// decoded reports whether the arguments decoded, as the procedures' return value.
func (rq *request) decoded() error {
	if rq.args.Err() != nil {
		return oncrpc.ErrGarbageArgs
	}
	return nil
}

// status writes the status of a result: the one place the procedures turn err into it.
func (rq *request) status(err error) { rq.res.Uint32(uint32(StatusOf(err))) }

func (rq *request) postOpAttr(st *syscall.Stat_t) { putPostOpAttr(rq.res, st, rq.s.fsid) }

func (rq *request) wccData(pre, post *syscall.Stat_t) { putWccData(rq.res, pre, post, rq.s.fsid) }

// unionPath is the union's name of the object at elems.
func unionPath(elems []string) string { return path.Join(elems...) }

// lookupHandle is the handle and the attributes of the object at elems, from one union
// lookup.
func (rq *request) lookupHandle(elems []string) ([]byte, *syscall.Stat_t, error) {
	fh, info, err := rq.s.handles.Lookup(elems)
	if err == nil {
		err = checkMade(fh, info)
	}
	if err != nil {
		return nil, nil, rq.lookupFailed(unionPath(elems), err)
	}
	return fh, statOf(info), nil
}

// checkMade refuses a lookup's result that names nothing: a server fault (lookupFailed
// logs it).
func checkMade(fh []byte, info os.FileInfo) error {
	if len(fh) == 0 || info == nil {
		return errServerFault
	}
	return nil
}

// lookupFailed is the answer to a failed lookup of the object at p: there is no such
// object (any more), or the layers failed (logged), or a server fault.
func (rq *request) lookupFailed(p string, err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		return err
	case errors.As(err, &errno):
		rq.s.logger.Warn("cannot look up or make a file handle", "path", p, "err", err)
		return err
	}
	rq.s.logger.Warn("cannot make a file handle", "path", p, "err", err)
	return errServerFault
}

func (rq *request) stat(p string) (*syscall.Stat_t, error) {
	fi, err := rq.namespace().Lstat(p)
	if err != nil {
		return nil, err
	}
	return statOf(fi), nil
}

// statOrNil is for attributes that are optional in a reply.
func (rq *request) statOrNil(p string) *syscall.Stat_t {
	st, _ := rq.stat(p)
	return st
}

// objectReply answers the start of a call whose argument is one file handle: it resolves
// and stats the object and writes the status and the post_op_attr that begin FSINFO's,
// FSSTAT's and PATHCONF's results. ok reports that the rest of the results follow.
func (rq *request) objectReply() (ok bool, err error) {
	fh := rq.handle()
	if err := rq.decoded(); err != nil {
		return false, err
	}
	_, _, st, serr := rq.statHandle(fh)
	rq.status(serr)
	rq.postOpAttr(st)
	return serr == nil, nil
}

// statHandle resolves fh and returns the object's attributes from the lookup that
// confirmed it: STALE when it is gone.
func (rq *request) statHandle(fh []byte) ([]string, string, *syscall.Stat_t, error) {
	elems, p, info, err := rq.resolveInfo(fh)
	if err != nil {
		return nil, "", nil, err
	}
	return elems, p, statOf(info), nil
}

// resolveInfo resolves fh to the object's path (its components, and joined as the union
// names it: unionPath of the components) and the union's FileInfo of it.
func (rq *request) resolveInfo(fh []byte) ([]string, string, os.FileInfo, error) {
	elems, p, info, err := rq.s.handles.ResolvePath(fh)
	if err != nil {
		return nil, "", nil, rq.staleHandle(fh, err)
	}
	if p != "" && (p[0] == '/' || path.Clean(p) != p) { // Clean allocates only when it changes p
		p = unionPath(elems)
	}
	return elems, p, info, nil
}

// staleHandle is the answer to a handle that did not resolve (err from handles): STALE,
// and a debug line for bytes that are no handle at all.
func (rq *request) staleHandle(fh []byte, err error) error {
	if errors.Is(err, handles.ErrBadHandle) {
		rq.s.logger.Debug("malformed file handle", "len", len(fh))
	}
	return errStale
}

// fileAttr is the attributes of an open file as the union reports them: the layer
// object's fstat with the union's inode number (a regular file's other attributes are
// its top part's), so a READ or WRITE answers its post-operation attributes without
// another lookup. Nil when the descriptor cannot be stat'ed.
func fileAttr(f openFile, unionIno uint64) *syscall.Stat_t {
	st, err := f.LayerStat()
	if err != nil {
		return nil
	}
	st.Ino = unionIno
	return &st
}
