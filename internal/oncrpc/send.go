package oncrpc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Send makes a call and does not wait for a reply: the one-way messages of NLM's
// asynchronous procedures (a _MSG call, whose results travel back as a _RES call of
// their own), which a peer may answer with an empty reply or not at all. Over a stream
// the call is one record, over a datagram socket one datagram; ctx bounds the write.
func Send(ctx context.Context, conn net.Conn, prog, vers, proc uint32, args []byte) error {
	var w xdr.Writer
	for _, v := range []uint32{rand.Uint32(), MsgCall, RPCVersion, prog, vers, proc, AuthNone, 0, AuthNone, 0} {
		w.Uint32(v)
	}
	w.Fixed(args)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetWriteDeadline(time.Now()) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(d)
	}
	var err error
	if _, udp := conn.(*net.UDPConn); udp {
		if len(w.Buf) > MaxDatagram {
			return fmt.Errorf("rpc %d.%d.%d to %v: call of %d bytes does not fit a datagram", prog, vers, proc, conn.RemoteAddr(), len(w.Buf))
		}
		_, err = conn.Write(w.Buf)
	} else {
		err = WriteRecord(conn, w.Buf)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("rpc %d.%d.%d to %v: %w", prog, vers, proc, conn.RemoteAddr(), err)
	}
	return nil
}
