package oncrpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// What a call goes through between its bytes and its reply, the same on every transport:
// admit decodes the header and finds the procedure (or the refusal), answer runs the
// handler and lays out the reply.

// admit decodes a call record. ok is false when the record is no call at all: there is no
// XID to answer, and the transport decides what to do (TCP closes, UDP drops). Otherwise
// either refusal is the whole reply to send, or call and proc are what to run.
func (s *Server) admit(record []byte, local, remote net.Addr, client string) (call *Call, proc *Procedure, refusal []byte, ok bool) {
	h, ok := parseHeader(record)
	if !ok {
		return nil, nil, nil, false
	}
	switch {
	case h.rpcVers != RPCVersion:
		refusal = rpcMismatchReply(h.xid)
	case h.badCred:
		refusal = authErrorReply(h.xid, AuthBadCred)
	default:
		_, proc, refusal = s.table.lookup(&h)
	}
	if refusal != nil {
		s.logger.Debug("rpc refused", "xid", h.xid, "prog", h.prog, "vers", h.vers, "proc", h.proc,
			"client", client, "reply", ReplyOutcome(refusal))
		return nil, nil, refusal, true
	}
	call = &Call{XID: h.xid, Prog: h.prog, Vers: h.vers, Proc: h.proc, Cred: h.cred,
		Record: record, Client: client, LocalAddr: local, RemoteAddr: remote,
		args: xdr.Reader{Buf: record, Pos: h.argsAt}}
	call.Args = &call.args
	return call, proc, nil, true
}

// replyRoom is the capacity a reply's buffer starts with: the RPC header and the results
// of every NFSv3 procedure but READDIR, READDIRPLUS and READLINK (whose buffers grow),
// a LOOKUP's with a 64-byte handle and both attributes being 272 bytes.
const replyRoom = 320

// answer runs a call's handler and returns the reply record's parts, in order, the pipe
// whose data follows them (nil when none), and the Reply they come from, to hand to
// s.replies.put once they are written.
func (s *Server) answer(call *Call, proc *Procedure) (parts [][]byte, pipe *Pipe, reply *Reply) {
	started := time.Now()
	reply = s.replies.get()
	acceptedHeader(&reply.Writer, call.XID, Success)
	reply.resultsAt = len(reply.Buf)
	err := proc.Handle(context.Background(), call, reply)
	logger := s.logger
	switch {
	case err == nil && reply.Raw != nil:
		parts = append(reply.parts[:0], reply.Raw)
	case err == nil && reply.Pipe != nil:
		parts, pipe = append(reply.parts[:0], reply.Buf), reply.Pipe
	case err == nil && reply.Data != nil:
		parts = append(reply.parts[:0], reply.Buf, reply.Data, xdr.Padding(len(reply.Data)))
	case err == nil:
		parts = append(reply.parts[:0], reply.Buf)
	case errors.Is(err, ErrGarbageArgs):
		parts = [][]byte{acceptedReply(call.XID, GarbageArgs)}
	case errors.Is(err, ErrWeakAuth):
		parts = [][]byte{authErrorReply(call.XID, AuthTooWeak)}
	default:
		if !errors.Is(err, ErrSystem) {
			logger.Error("call failed", "call", s.table.name(call.Prog, call.Vers, call.Proc), "client", call.Client, "err", err)
		}
		parts = [][]byte{acceptedReply(call.XID, SystemErr)}
	}
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		attrs := []any{"xid", call.XID, "call", s.table.name(call.Prog, call.Vers, call.Proc),
			"us", time.Since(started).Microseconds()}
		if err != nil {
			attrs = append(attrs, "err", err)
		} else if res := reply.Results(); proc.Status && reply.Raw == nil && len(res) >= 4 {
			attrs = append(attrs, "status", xdr.NewReader(res, 0).Uint32())
		}
		logger.Debug("rpc", attrs...)
	}
	return parts, pipe, reply
}

// replyRecycler recycles Replies and their buffers from one call to the next: a fresh
// Reply and buffer per call were a sixth of the server's allocations (by bytes) in the
// toolchain profile. Its zero value is ready.
type replyRecycler struct {
	pool sync.Pool // of *Reply, emptied, Buf with at least replyRoom capacity
}

// maxRecycledReply bounds the buffer a recycled Reply keeps: a READDIRPLUS grows its
// buffer to the client's count, which is not worth holding on to for LOOKUPs.
const maxRecycledReply = 64 << 10

// get returns an empty Reply with room for most replies up front (grown from nothing,
// the header and a LOOKUP's results took six allocations).
func (r *replyRecycler) get() *Reply {
	if reply, ok := r.pool.Get().(*Reply); ok {
		return reply
	}
	return &Reply{Writer: xdr.Writer{Buf: make([]byte, 0, replyRoom)}}
}

// put runs reply's Release, once its record has been written or has failed to be, and
// keeps the Reply for another call; nothing may refer to reply or its parts afterwards.
func (r *replyRecycler) put(reply *Reply) {
	if reply.Release != nil {
		reply.Release()
	}
	buf := reply.Buf[:0]
	if cap(buf) > maxRecycledReply {
		return
	}
	*reply = Reply{Writer: xdr.Writer{Buf: buf}}
	r.pool.Put(reply)
}
