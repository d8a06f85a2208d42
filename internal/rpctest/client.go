// Package rpctest is the typed ONC RPC client of the tests and benchmarks: one TCP
// connection, many calls in flight with replies matched by XID, the RPC-level reply codes
// visible (which the usual clients hide), and typed NFSv3 and MOUNT calls. StartServer
// runs a whole server in-process on 127.0.0.1 over fresh layers.
//
// Files: client.go (Client: Dial, New, Call, Start, Wait), nfs.go (typed NFSv3 calls, MNT,
// and argument builders), mount.go (EXPORT, DUMP, UMNT, UMNTALL), attr.go (decoded
// attributes), server.go (StartServer), nlm.go (NLMClient: NLM calls as one client host,
// through oncrpc.Invoke).
package rpctest

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Client is a raw RPC client on one connection.
type Client struct {
	t    testing.TB
	conn net.Conn

	wmu sync.Mutex // one call record on the socket at a time
	mu  sync.Mutex // guards the fields below
	xid uint32
	// waiting maps an XID to the channel its reply goes to.
	waiting    map[uint32]chan []byte
	err        error
	credFlavor uint32
	credBody   []byte

	done chan struct{}
}

// Dial connects to addr; the connection closes at the test's cleanup. Calls carry an
// AUTH_UNIX credential for root until As says otherwise.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return New(t, conn)
}

// New is a Client on a connection made elsewhere (in another network namespace, say);
// the connection closes at the test's cleanup.
func New(t testing.TB, conn net.Conn) *Client {
	c := &Client{t: t, conn: conn, xid: 0x1000, waiting: make(map[uint32]chan []byte), done: make(chan struct{}),
		credFlavor: oncrpc.AuthUnix, credBody: oncrpc.AuthUnixBody("test", 0, 0)}
	go c.readLoop()
	t.Cleanup(func() {
		conn.Close()
		<-c.done
	})
	return c
}

// As makes the following calls carry an AUTH_UNIX credential for uid, gid and groups.
func (c *Client) As(uid, gid uint32, groups ...uint32) {
	c.SetCredential(oncrpc.AuthUnix, oncrpc.AuthUnixBody("test", uid, gid, groups...))
}

// SetCredential makes the following calls carry this credential, well formed or not.
func (c *Client) SetCredential(flavor uint32, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.credFlavor, c.credBody = flavor, body
}

// Conn is the connection, for tests that write raw records.
func (c *Client) Conn() net.Conn { return c.conn }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		record, err := oncrpc.ReadRecord(c.conn)
		if err != nil {
			c.mu.Lock()
			c.err = err
			for xid, ch := range c.waiting {
				close(ch)
				delete(c.waiting, xid)
			}
			c.mu.Unlock()
			return
		}
		if len(record) < 4 {
			continue
		}
		xid := binary.BigEndian.Uint32(record)
		c.mu.Lock()
		ch := c.waiting[xid]
		delete(c.waiting, xid)
		c.mu.Unlock()
		if ch != nil {
			ch <- record
		}
	}
}

// Start sends a call and returns the channel its reply arrives on (closed if the
// connection ends first). rpcVers lets a test send a wrong RPC version.
func (c *Client) Start(rpcVers, prog, vers, proc uint32, args []byte) <-chan []byte {
	c.mu.Lock()
	c.xid++
	xid := c.xid
	ch := make(chan []byte, 1)
	c.waiting[xid] = ch
	var w xdr.Writer
	w.Uint32(xid)
	w.Uint32(oncrpc.MsgCall)
	w.Uint32(rpcVers)
	w.Uint32(prog)
	w.Uint32(vers)
	w.Uint32(proc)
	w.Uint32(c.credFlavor)
	w.Opaque(c.credBody)
	c.mu.Unlock()
	w.Uint32(0) // verifier AUTH_NULL
	w.Uint32(0)
	w.Fixed(args)
	c.wmu.Lock()
	err := oncrpc.WriteRecord(c.conn, w.Buf)
	c.wmu.Unlock()
	if err != nil {
		c.t.Errorf("sending call: %v", err)
	}
	return ch
}

// Wait returns the reply that arrives on ch, failing the test after 30 s.
func (c *Client) Wait(ch <-chan []byte) []byte {
	c.t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			c.t.Fatalf("connection ended before the reply: %v", err)
		}
		return r
	case <-time.After(30 * time.Second):
		c.t.Fatal("no reply within 30s")
	}
	return nil
}

// Call sends a call and waits for its reply.
func (c *Client) Call(prog, vers, proc uint32, args []byte) []byte {
	c.t.Helper()
	return c.Wait(c.Start(oncrpc.RPCVersion, prog, vers, proc, args))
}

// Rejection decodes a MSG_DENIED reply: its reject_stat and the value after it (the
// auth_stat of AUTH_ERROR, the lowest version of RPC_MISMATCH); ok is false for any other
// reply.
func Rejection(reply []byte) (rejectStat, detail uint32, ok bool) {
	r := xdr.NewReader(reply, 4)
	if r.Uint32() != oncrpc.MsgReply || r.Uint32() != oncrpc.MsgDenied {
		return 0, 0, false
	}
	rejectStat, detail = r.Uint32(), r.Uint32()
	return rejectStat, detail, r.Err() == nil
}

// Accepted checks a reply is MSG_ACCEPTED with the given accept_stat and returns a reader
// positioned after it.
func Accepted(t testing.TB, reply []byte, want oncrpc.AcceptStat) *xdr.Reader {
	t.Helper()
	r := xdr.NewReader(reply, 4)
	if r.Uint32() != oncrpc.MsgReply || r.Uint32() != oncrpc.MsgAccepted {
		t.Fatalf("not an accepted reply: %x", reply)
	}
	_, _ = r.Uint32(), r.Opaque() // verifier
	if got := oncrpc.AcceptStat(r.Uint32()); got != want || r.Err() != nil {
		t.Fatalf("accept_stat = %v (%v), want %v", got, r.Err(), want)
	}
	return r
}
