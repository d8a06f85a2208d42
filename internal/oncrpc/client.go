package oncrpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// The client side, for the few calls the server makes itself (registering with the
// system's rpcbind, asking whether a portmapper answers): one call at a time, AUTH_NONE.

// ReplyError is a reply without results: the call was refused or failed.
type ReplyError struct {
	// Outcome is ReplyOutcome's word for the reply: PROG_UNAVAIL, PROG_MISMATCH,
	// PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR, AUTH_ERROR, RPC_MISMATCH.
	Outcome string
	// Low and High are the versions the server offers, after PROG_MISMATCH.
	Low, High uint32
}

func (e *ReplyError) Error() string {
	if e.Outcome == ProgMismatch.String() {
		return fmt.Sprintf("rpc: %s (versions %d to %d)", e.Outcome, e.Low, e.High)
	}
	return "rpc: " + e.Outcome
}

// resendEvery is how long a call over UDP waits for its reply before it is sent again.
const resendEvery = time.Second

// Invoke makes one call on conn and returns its results. Over a stream (TCP, a Unix
// socket) the call and the reply are records; over a *net.UDPConn made by net.DialUDP each
// is one datagram, and the call is sent again every second until its reply arrives. ctx
// bounds the whole exchange. A reply that is not SUCCESS is a *ReplyError.
func Invoke(ctx context.Context, conn net.Conn, prog, vers, proc uint32, args []byte) ([]byte, error) {
	xid := rand.Uint32()
	var w xdr.Writer
	for _, v := range []uint32{xid, MsgCall, RPCVersion, prog, vers, proc, AuthNone, 0, AuthNone, 0} {
		w.Uint32(v)
	}
	w.Fixed(args)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	var reply []byte
	var err error
	if udp, ok := conn.(*net.UDPConn); ok {
		reply, err = exchangeDatagram(ctx, udp, xid, w.Buf)
	} else {
		reply, err = exchangeRecord(conn, xid, w.Buf)
	}
	if err != nil {
		// The socket's deadline is ctx's and may pass a moment before ctx says so.
		var ne net.Error
		if d, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(d) {
			err = context.DeadlineExceeded
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("rpc %d.%d.%d to %v: %w", prog, vers, proc, conn.RemoteAddr(), err)
	}
	return results(reply)
}

func exchangeRecord(conn net.Conn, xid uint32, call []byte) ([]byte, error) {
	if err := WriteRecord(conn, call); err != nil {
		return nil, err
	}
	for {
		reply, err := ReadRecord(conn)
		if err != nil {
			return nil, err
		}
		if len(reply) >= 4 && binary.BigEndian.Uint32(reply) == xid {
			return reply, nil
		}
	}
}

func exchangeDatagram(ctx context.Context, conn *net.UDPConn, xid uint32, call []byte) ([]byte, error) {
	buf := make([]byte, MaxDatagram+1)
	for {
		if _, err := conn.Write(call); err != nil {
			return nil, err
		}
		resend := time.Now().Add(resendEvery)
		if d, ok := ctx.Deadline(); ok && d.Before(resend) {
			resend = d
		}
		_ = conn.SetReadDeadline(resend)
		for {
			n, err := conn.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				break // send again
			}
			if err != nil {
				return nil, err
			}
			if n >= 4 && n <= MaxDatagram && binary.BigEndian.Uint32(buf) == xid {
				return append([]byte(nil), buf[:n]...), nil
			}
		}
	}
}

// results checks a reply and returns what follows its header.
func results(reply []byte) ([]byte, error) {
	at, ok := ResultsAt(reply)
	if ok {
		return reply[at:], nil
	}
	e := &ReplyError{Outcome: ReplyOutcome(reply)}
	r := xdr.NewReader(reply, 8)
	if r.Uint32() == MsgAccepted {
		_, _ = r.Uint32(), r.Opaque()
		if AcceptStat(r.Uint32()) == ProgMismatch {
			e.Low, e.High = r.Uint32(), r.Uint32()
		}
	} else if r.Uint32() == RejectRPCMismatch {
		e.Low, e.High = r.Uint32(), r.Uint32()
	}
	return nil, e
}
