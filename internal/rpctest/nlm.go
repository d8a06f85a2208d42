package rpctest

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// NLMClient speaks NLM to a lock manager as one client host (its caller name), one
// oncrpc.Invoke per call on a connection of its own: a lock manager that is not the
// kernel's, to contend with real clients and to see their locks.
type NLMClient struct {
	Addr  string // the lock manager's HOST:PORT
	Netid string // "tcp" or "udp"
	Vers  uint32 // 1, 3 or 4
	Name  string // the caller name
	// Dial makes the connections (nil: net.Dialer's DialContext).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Call makes one NLM call and returns its results.
func (c *NLMClient) Call(proc nlm.Proc, args []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := c.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, c.Netid, c.Addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return oncrpc.Invoke(ctx, conn, nlm.ProgramNumber, c.Vers, uint32(proc), args)
}

// LockOf is a lock of this client's on fh, owned by process svid.
func (c *NLMClient) LockOf(fh []byte, svid int32, offset, length uint64) nlm.Lock {
	return nlm.Lock{CallerName: []byte(c.Name), FH: fh, OH: []byte(fmt.Sprintf("%d@%s", svid, c.Name)), SVID: svid,
		Offset: offset, Length: length}
}

func (c *NLMClient) res(proc nlm.Proc, args []byte) (uint32, error) {
	out, err := c.Call(proc, args)
	if err != nil {
		return 0, err
	}
	r, err := nlm.DecodeRes(xdr.NewReader(out, 0), c.Vers)
	if err != nil {
		return 0, fmt.Errorf("NLM proc %d reply: %w", proc, err)
	}
	return r.Stat, nil
}

// Lock is LOCK; it returns the status.
func (c *NLMClient) Lock(a nlm.LockArgs) (uint32, error) {
	var w xdr.Writer
	a.Encode(&w, c.Vers)
	return c.res(nlm.ProcLock, w.Buf)
}

// Unlock is UNLOCK of l.
func (c *NLMClient) Unlock(l nlm.Lock) (uint32, error) {
	var w xdr.Writer
	nlm.UnlockArgs{Cookie: []byte("unlock"), Lock: l}.Encode(&w, c.Vers)
	return c.res(nlm.ProcUnlock, w.Buf)
}

// Test is TEST of l.
func (c *NLMClient) Test(exclusive bool, l nlm.Lock) (nlm.TestRes, error) {
	var w xdr.Writer
	nlm.TestArgs{Cookie: []byte("test"), Exclusive: exclusive, Lock: l}.Encode(&w, c.Vers)
	out, err := c.Call(nlm.ProcTest, w.Buf)
	if err != nil {
		return nlm.TestRes{}, err
	}
	return nlm.DecodeTestRes(xdr.NewReader(out, 0), c.Vers)
}
