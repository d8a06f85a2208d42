// Package control is the control interface of a running server: a unix socket that
// `ovlnfs snapshot`, `ovlnfs reset` and `ovlnfs commit` talk to. A connection carries one request, a JSON
// object on one line, and gets one response line back. The socket is made mode 0600, and
// a connection from a user other than the server's own (or root) is refused, by its peer
// credentials, before it is read.
//
// Files: control.go (Request, Response, Handler, Serve, Listen, Call).
//
// Lock order: this package takes no locks.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// The operations.
const (
	OpSnapshot       = "snapshot"
	OpSnapshots      = "snapshots"
	OpRemoveSnapshot = "snapshot-rm"
	OpReset          = "reset"
	OpCommit         = "commit"
)

// Request is one operation on one export's workspace.
type Request struct {
	Op     string `json:"op"`
	Export string `json:"export"`
	// Name is the snapshot taken, removed or reset to ("" for a reset: to the lowers),
	// or the new layer's directory of a commit.
	Name string `json:"name,omitempty"`
	// Flatten and Target are a commit's: the layer flattened (the whole tree, replacing the
	// lowers), or put onto the stack of the export Target instead.
	Flatten bool   `json:"flatten,omitempty"`
	Target  string `json:"target,omitempty"`
}

// Response is the answer: Error is empty on success.
type Response struct {
	Error     string                    `json:"error,omitempty"`
	Snapshot  *billyunion.SnapshotInfo  `json:"snapshot,omitempty"`
	Snapshots []billyunion.SnapshotInfo `json:"snapshots,omitempty"`
	Commit    *billyunion.CommitInfo    `json:"commit,omitempty"`
	// Progress, in a line before the answer: how far the operation is.
	Progress *Progress `json:"progress,omitempty"`
	Took     string    `json:"took,omitempty"`
}

// Handler carries out requests (internal/server's Server).
type Handler interface {
	Snapshot(export, name string) (billyunion.SnapshotInfo, error)
	Snapshots(export string) ([]billyunion.SnapshotInfo, error)
	RemoveSnapshot(export, name string) error
	Reset(export, snapshot string) error
	// Commit reports its progress through progress (entries moved of the total); flatten
	// and target are Request.Flatten and Request.Target.
	Commit(export, into string, flatten bool, target string, progress func(done, total int)) (billyunion.CommitInfo, error)
}

// Progress is a line a server sends before its answer while a long operation runs.
type Progress struct {
	Done  int `json:"done"`
	Total int `json:"total"`
}

// maxRequest bounds a request line.
const maxRequest = 64 << 10

// Listen makes the control socket at path, mode 0600. A socket file left by a process
// that is gone is replaced; one a running process answers on is refused.
func Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another process answers on it", path)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve answers connections on l until it is closed (then it returns nil).
func Serve(l net.Listener, h Handler, logger *slog.Logger) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go serveConn(c, h, logger)
	}
}

func serveConn(c net.Conn, h Handler, logger *slog.Logger) {
	defer c.Close()
	reply := func(r Response) {
		b, _ := json.Marshal(r)
		_, _ = c.Write(append(b, '\n'))
	}
	if err := allowed(c); err != nil {
		logger.Warn("control connection refused", "err", err)
		reply(Response{Error: err.Error()})
		return
	}
	line, err := bufio.NewReaderSize(c, maxRequest).ReadSlice('\n')
	if err != nil {
		reply(Response{Error: "a request is one JSON object on one line"})
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		reply(Response{Error: "bad request: " + err.Error()})
		return
	}
	start := time.Now()
	logger.Info("control request", "op", req.Op, "export", req.Export, "name", req.Name, "flatten", req.Flatten, "target", req.Target)
	var resp Response
	switch req.Op {
	case OpSnapshot:
		var info billyunion.SnapshotInfo
		info, err = h.Snapshot(req.Export, req.Name)
		resp.Snapshot = &info
	case OpSnapshots:
		resp.Snapshots, err = h.Snapshots(req.Export)
	case OpRemoveSnapshot:
		err = h.RemoveSnapshot(req.Export, req.Name)
	case OpReset:
		err = h.Reset(req.Export, req.Name)
	case OpCommit:
		var info billyunion.CommitInfo
		info, err = h.Commit(req.Export, req.Name, req.Flatten, req.Target, func(done, total int) {
			reply(Response{Progress: &Progress{Done: done, Total: total}})
		})
		resp.Commit = &info
	default:
		err = fmt.Errorf("unknown operation %q (known: %s, %s, %s, %s, %s)", req.Op, OpSnapshot, OpSnapshots, OpRemoveSnapshot, OpReset, OpCommit)
	}
	if err != nil {
		logger.Warn("control request failed", "op", req.Op, "export", req.Export, "err", err)
		resp = Response{Error: err.Error()}
	}
	resp.Took = time.Since(start).Round(time.Millisecond).String()
	reply(resp)
}

// allowed refuses a peer that is neither root nor the server's own user.
func allowed(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d may not control this server (only root and uid %d)", cred.Uid, os.Geteuid())
	}
	return nil
}

// Call sends req to the server at the control socket path and returns its response;
// the error is the server's refusal or failure, or that of reaching it.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	return CallWithProgress(ctx, path, req, nil)
}

// CallWithProgress is Call, with progress hearing the progress lines before the answer.
func CallWithProgress(ctx context.Context, path string, req Request, progress func(Progress)) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	// A refused peer is answered before its request is read, and the connection closed:
	// the write may fail while the answer waits to be read.
	_, werr := c.Write(append(b, '\n'))
	rd := bufio.NewReader(c)
	var resp Response
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			if werr != nil {
				return Response{}, fmt.Errorf("control socket %s: %w", path, werr)
			}
			return Response{}, fmt.Errorf("control socket %s: no answer: %w", path, err)
		}
		resp = Response{}
		if err := json.Unmarshal(line, &resp); err != nil {
			return Response{}, fmt.Errorf("control socket %s: bad answer: %w", path, err)
		}
		if resp.Progress == nil {
			break
		}
		if progress != nil {
			progress(*resp.Progress)
		}
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
