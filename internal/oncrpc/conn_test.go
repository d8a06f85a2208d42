package oncrpc_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Record memory is reused from call to call: a handler still running must keep seeing its
// own call's bytes while later calls (small and WRITE-sized) are read on the same
// connection. The echo handler waits a little before answering with a copy of its
// arguments, so calls overlap and the reader reuses buffers meanwhile.
func TestOverlappingCallsKeepTheirOwnBytes(t *testing.T) {
	const prog, vers = 400999, 1
	echo := func(ctx context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
		args := call.Args.Opaque()
		if err := call.Args.Err(); err != nil {
			return oncrpc.ErrGarbageArgs
		}
		time.Sleep(time.Duration(len(args)%7) * time.Millisecond)
		reply.Opaque(args)
		return nil
	}
	c := serveTCP(t, oncrpc.Program{Name: "ECHO", Number: prog, Version: vers,
		Procedures: []oncrpc.Procedure{{Name: "NULL"}, {Name: "ECHO", Handle: echo}}})
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 4, 100, 64<<10 - 200, 64 << 10, 200 << 10, 1 << 20, 1<<20 + 60<<10, 3 << 20}
	type pending struct {
		want []byte
		ch   <-chan []byte
	}
	var calls []pending
	for i := range 120 {
		payload := make([]byte, sizes[rng.IntN(len(sizes))])
		for j := range payload {
			payload[j] = byte(i + j*7)
		}
		var w xdr.Writer
		w.Opaque(payload)
		calls = append(calls, pending{payload, c.Start(oncrpc.RPCVersion, prog, vers, 1, w.Buf)})
	}
	for i, p := range calls {
		r := rpctest.Accepted(t, c.Wait(p.ch), oncrpc.Success)
		if got := r.Opaque(); !bytes.Equal(got, p.want) {
			t.Fatalf("call %d (%d bytes) answered with other bytes (%d bytes)", i, len(p.want), len(got))
		}
	}
}

// A call answered on the reading goroutine (it is alone on its connection) that takes long
// does not hold up the call sent after it: the later, quick call is answered first.
func TestSlowLoneCallDoesNotHoldUpTheNext(t *testing.T) {
	const prog, vers = 400998, 1
	release := make(chan struct{})
	slow := func(ctx context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
		<-release
		reply.Uint32(1)
		return nil
	}
	quick := func(ctx context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
		reply.Uint32(2)
		return nil
	}
	c := serveTCP(t, oncrpc.Program{Name: "T", Number: prog, Version: vers,
		Procedures: []oncrpc.Procedure{{Name: "NULL"}, {Name: "SLOW", Handle: slow}, {Name: "QUICK", Handle: quick}}})
	for round := range 3 {
		slowReply := c.Start(oncrpc.RPCVersion, prog, vers, 1, nil)
		time.Sleep(20 * time.Millisecond) // the slow call is read, alone, before the quick one is sent
		quickReply := c.Start(oncrpc.RPCVersion, prog, vers, 2, nil)
		select {
		case r := <-quickReply:
			if got := rpctest.Accepted(t, r, oncrpc.Success).Uint32(); got != 2 {
				t.Fatalf("quick call answered %d", got)
			}
		case <-slowReply:
			t.Fatalf("round %d: the slow call was answered first", round)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the quick call waited for the slow one", round)
		}
		release <- struct{}{}
		rpctest.Accepted(t, c.Wait(slowReply), oncrpc.Success)
	}
}

// serveTCP serves prog on a port of 127.0.0.1 until the test ends and returns a client
// connected to it.
func serveTCP(t *testing.T, prog oncrpc.Program) *rpctest.Client {
	t.Helper()
	srv, err := oncrpc.New(oncrpc.Config{Programs: []oncrpc.Program{prog}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return rpctest.Dial(t, l.Addr().String())
}
