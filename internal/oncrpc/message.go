package oncrpc

import (
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Message types and reply states (RFC 5531 section 9), for servers and clients alike.
const (
	MsgCall  = 0
	MsgReply = 1

	MsgAccepted = 0
	MsgDenied   = 1

	// RPCVersion is the one version of the protocol.
	RPCVersion = 2
)

// AcceptStat is the status of an accepted call.
type AcceptStat uint32

// The accept_stat values.
const (
	Success      AcceptStat = 0
	ProgUnavail  AcceptStat = 1
	ProgMismatch AcceptStat = 2
	ProcUnavail  AcceptStat = 3
	GarbageArgs  AcceptStat = 4
	SystemErr    AcceptStat = 5
)

func (s AcceptStat) String() string {
	switch s {
	case Success:
		return "SUCCESS"
	case ProgUnavail:
		return "PROG_UNAVAIL"
	case ProgMismatch:
		return "PROG_MISMATCH"
	case ProcUnavail:
		return "PROC_UNAVAIL"
	case GarbageArgs:
		return "GARBAGE_ARGS"
	case SystemErr:
		return "SYSTEM_ERR"
	}
	return "?"
}

// Rejections of a call (reject_stat) and the authentication error (auth_stat) sent here.
const (
	RejectRPCMismatch = 0
	RejectAuthError   = 1

	AuthBadCred = 1
	AuthTooWeak = 5
)

// header is the part of a call record the server dispatches on.
type header struct {
	xid, msgType, rpcVers, prog, vers, proc uint32
	cred                                    Credential
	badCred                                 bool // an AUTH_UNIX credential that does not decode
	argsAt                                  int  // offset of the procedure's arguments
}

// parseHeader decodes a call's header; ok is false when the record is no call at all (no
// XID can be trusted to answer it).
func parseHeader(record []byte) (h header, ok bool) {
	r := xdr.NewReader(record, 0)
	h.xid, h.msgType, h.rpcVers = r.Uint32(), r.Uint32(), r.Uint32()
	h.prog, h.vers, h.proc = r.Uint32(), r.Uint32(), r.Uint32()
	flavor := r.Uint32()
	body := r.OpaqueMax(maxAuthBody, errBadAuth)
	if r.Err() == nil {
		h.cred, h.badCred = ParseCredential(flavor, body)
	}
	_ = r.Uint32()                           // verifier flavor
	_ = r.OpaqueMax(maxAuthBody, errBadAuth) // verifier body
	h.argsAt = r.Pos
	return h, r.Err() == nil && h.msgType == MsgCall
}

// acceptedHeader starts a MSG_ACCEPTED reply with an AUTH_NULL verifier.
func acceptedHeader(w *xdr.Writer, xid uint32, stat AcceptStat) {
	w.Uint32(xid)
	w.Uint32(MsgReply)
	w.Uint32(MsgAccepted)
	w.Uint32(0) // verifier flavor AUTH_NULL
	w.Uint32(0) // verifier length
	w.Uint32(uint32(stat))
}

// acceptedReply is a whole accepted reply without results.
func acceptedReply(xid uint32, stat AcceptStat) []byte {
	var w xdr.Writer
	acceptedHeader(&w, xid, stat)
	return w.Buf
}

// progMismatchReply tells the versions of a program served, low to high.
func progMismatchReply(xid, low, high uint32) []byte {
	var w xdr.Writer
	acceptedHeader(&w, xid, ProgMismatch)
	w.Uint32(low)
	w.Uint32(high)
	return w.Buf
}

// deniedReply is a MSG_DENIED reply: the reject_stat and what it carries.
func deniedReply(xid uint32, rejection ...uint32) []byte {
	var w xdr.Writer
	w.Uint32(xid)
	w.Uint32(MsgReply)
	w.Uint32(MsgDenied)
	for _, v := range rejection {
		w.Uint32(v)
	}
	return w.Buf
}

// rpcMismatchReply refuses a call of another RPC protocol version: it tells the versions
// served, low to high.
func rpcMismatchReply(xid uint32) []byte {
	return deniedReply(xid, RejectRPCMismatch, RPCVersion, RPCVersion)
}

// authErrorReply refuses a call with AUTH_ERROR: AuthBadCred for a credential that is
// malformed, AuthTooWeak for a caller not allowed to make it.
func authErrorReply(xid, stat uint32) []byte { return deniedReply(xid, RejectAuthError, stat) }

// ReplyOutcome describes a reply record for logs and tests: its accept_stat, or the
// reason it was denied.
func ReplyOutcome(reply []byte) string {
	r := xdr.NewReader(reply, 4)
	if r.Uint32() != MsgReply {
		return "not a reply"
	}
	if r.Uint32() == MsgDenied {
		if r.Uint32() == RejectAuthError {
			return "AUTH_ERROR"
		}
		return "RPC_MISMATCH"
	}
	_, _ = r.Uint32(), r.Opaque()
	stat := AcceptStat(r.Uint32())
	if r.Err() != nil {
		return "truncated"
	}
	return stat.String()
}

// ResultsAt returns where the results begin in an accepted, successful reply.
func ResultsAt(reply []byte) (int, bool) {
	r := xdr.NewReader(reply, 4)
	if r.Uint32() != MsgReply || r.Uint32() != MsgAccepted {
		return 0, false
	}
	_, _ = r.Uint32(), r.Opaque()
	if AcceptStat(r.Uint32()) != Success {
		return 0, false
	}
	return r.Pos, r.Err() == nil
}
