// Package gonfs is the one bridge to go-nfs (github.com/willscott/go-nfs v0.0.4).
//
// What it forwards: MOUNT's MNT, and nothing else. go-nfs decodes the mount path, asks
// this package's Handler whether and what to mount, and encodes the mount result: the
// root file handle (made by package handles) and the auth flavors. Every NFSv3 procedure
// and the rest of MOUNT are answered by packages nfs3 and mount, because go-nfs gets them
// wrong in ways a client notices (lost errnos, one time for three, no fsync behind
// FILE_SYNC, no exclusive CREATE, LINK decoded with the SYMLINK layout, ACCESS granting
// whatever is asked, READDIR paging in quadratic time, one call at a time per
// connection; see ../shared/notes/go-nfs-v0.0.4.md).
//
// How: go-nfs serves connections from a listener of in-memory pipes. Forward opens one
// pipe per call, reporting the client's addresses so go-nfs's Mount sees who mounts,
// writes the call record, reads the reply record and closes the pipe.
//
// Files: bridge.go (Bridge, Forward), handler.go (the go-nfs Handler), log.go (go-nfs's
// log lines into slog).
//
// Lock order: pipeListener's once is the only lock, a leaf.
package gonfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	nfs "github.com/willscott/go-nfs"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// Config is what the bridge needs to answer MNT.
type Config struct {
	// Mount finds what a client at remote mounts as dirpath (clean, absolute): the
	// export's union and handles, and the components of dirpath below the export's root.
	// Its error refuses the mount: EACCES (the client may not), ENOENT (no export holds
	// dirpath).
	Mount  func(dirpath string, remote net.Addr) (Target, error)
	Logger *slog.Logger
}

// Target is the export a MNT mounts and where in it.
type Target struct {
	Union   *billyunion.FS
	Handles *handles.Handles
	// Export is the export's path, Below the components of the mount path below it.
	Export string
	Below  []string
}

// Bridge forwards calls to a go-nfs server of the union.
type Bridge struct {
	pipes  *pipeListener
	logger *slog.Logger
}

// New starts go-nfs on its pipe listener.
func New(cfg Config) (*Bridge, error) {
	if cfg.Mount == nil {
		return nil, errors.New("gonfs: a Mount function is needed")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	routeGoNFSLog(logger) // go-nfs's logger is one per process (log.go)
	b := &Bridge{pipes: newPipeListener(), logger: logger}
	h := &handler{mount: cfg.Mount, logger: logger}
	server := &nfs.Server{Handler: h, Context: context.Background()}
	// Serve returns when Close closes the pipe listener.
	go func() { _ = server.Serve(b.pipes) }()
	return b, nil
}

// Close stops go-nfs.
func (b *Bridge) Close() error { return b.pipes.Close() }

// Forward has go-nfs answer call and returns its reply record.
func (b *Bridge) Forward(ctx context.Context, call *oncrpc.Call) ([]byte, error) {
	mine, theirs := net.Pipe()
	defer mine.Close()
	select {
	case b.pipes.conns <- &pipeEnd{Conn: theirs, local: call.LocalAddr, remote: call.RemoteAddr}:
	case <-b.pipes.done:
		theirs.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		theirs.Close()
		return nil, ctx.Err()
	}
	// go-nfs reads the whole call before it answers, so writing first and then reading
	// cannot deadlock on the unbuffered pipe.
	if err := oncrpc.WriteRecord(mine, call.Record); err != nil {
		return nil, err
	}
	for {
		reply, err := oncrpc.ReadRecord(mine)
		if err != nil {
			return nil, fmt.Errorf("go-nfs gave no reply: %w", err)
		}
		// go-nfs writes an empty record when its connection context ends mid-call.
		if len(reply) < 8 {
			continue
		}
		if binary.BigEndian.Uint32(reply) != call.XID {
			return nil, errors.New("go-nfs answered with another XID")
		}
		fixAcceptStat(reply)
		return reply, nil
	}
}

// fixAcceptStat corrects go-nfs v0.0.4's accept_stat numbering in place: its enum leaves
// out PROG_MISMATCH, so its PROC_UNAVAIL, GARBAGE_ARGS and SYSTEM_ERR would go out as
// PROG_MISMATCH, PROC_UNAVAIL and GARBAGE_ARGS.
func fixAcceptStat(reply []byte) {
	outcome := oncrpc.ReplyOutcome(reply)
	if outcome != oncrpc.ProgMismatch.String() && outcome != oncrpc.ProcUnavail.String() &&
		outcome != oncrpc.GarbageArgs.String() {
		return
	}
	// An accepted reply with an AUTH_NULL verifier: xid, REPLY, ACCEPTED, flavor, length,
	// then accept_stat.
	const statAt = 20
	if len(reply) >= statAt+4 && binary.BigEndian.Uint32(reply[16:]) == 0 {
		stat := binary.BigEndian.Uint32(reply[statAt:])
		binary.BigEndian.PutUint32(reply[statAt:], stat+1)
	}
}

// pipeListener is the listener go-nfs serves: its connections are the pipes Forward
// opens. Closing it ends go-nfs's Serve.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "go-nfs bridge" }

// pipeEnd is go-nfs's end of a pipe, reporting the client's addresses.
type pipeEnd struct {
	net.Conn
	local, remote net.Addr
}

func (p *pipeEnd) LocalAddr() net.Addr  { return p.local }
func (p *pipeEnd) RemoteAddr() net.Addr { return p.remote }
