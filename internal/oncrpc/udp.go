package oncrpc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// MaxDatagram bounds a call or a reply carried in one UDP datagram: the largest UDP
// payload IPv4 carries (65,535 bytes less the IP and UDP headers). A call over it is
// answered GARBAGE_ARGS (its arguments cannot all have arrived); a reply over it is
// replaced by SYSTEM_ERR, as no datagram can carry it. The programs served over UDP
// (MOUNT, the portmapper) answer far less.
const MaxDatagram = 65507

// datagramSocket is one UDP socket being served: every datagram is one call, answered to
// where it came from.
type datagramSocket struct {
	srv *Server
	pc  *net.UDPConn
	// pktinfo: the socket is bound to a wildcard address, so each call's destination
	// address is read from IP_PKTINFO and the reply is sent from it (a client that
	// reached us at one of several addresses only accepts a reply from that one).
	pktinfo bool
	local   *net.UDPAddr

	// slots holds a token per call being handled; its capacity is the bound.
	slots chan struct{}

	mu      sync.Mutex                // guards calls
	calls   map[datagramCall]struct{} // calls being handled, to drop retransmissions of them
	workers sync.WaitGroup
}

// datagramCall names a call in flight: who sent it and its XID.
type datagramCall struct {
	from netip.AddrPort
	xid  uint32
}

// ServeUDP answers the calls that arrive on pc until pc is closed (it then returns
// net.ErrClosed) or Shutdown stops it (nil). Up to MaxInFlight calls are handled at once;
// an Exclusive procedure runs alone. A retransmission of a call still being handled is
// dropped; there is no cache of replies already sent, so a call retransmitted after its
// reply was lost is handled again (MOUNT's and the portmapper's procedures may be).
//
// Shutdown stops the reading and waits for the replies of calls already read; close pc
// after Shutdown returns, so that those replies still go out.
func (s *Server) ServeUDP(pc *net.UDPConn) error {
	d, err := newDatagramSocket(s, pc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return nil
	}
	s.sockets[d] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sockets, d)
		s.mu.Unlock()
	}()
	defer d.workers.Wait()
	return d.serve()
}

func newDatagramSocket(s *Server, pc *net.UDPConn) (*datagramSocket, error) {
	local, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("oncrpc: %v is not a UDP socket", pc.LocalAddr())
	}
	d := &datagramSocket{srv: s, pc: pc, local: local,
		slots: make(chan struct{}, MaxInFlight), calls: make(map[datagramCall]struct{})}
	if local.IP.IsUnspecified() {
		if err := enablePktinfo(pc, local.IP.To4() != nil); err != nil {
			return nil, fmt.Errorf("oncrpc: learning the destination of datagrams on %v: %w", local, err)
		}
		d.pktinfo = true
	}
	return d, nil
}

func (d *datagramSocket) serve() error {
	logger := d.srv.logger
	// One byte over the bound, so that a datagram over it shows (IPv6 carries up to
	// 65,527 bytes); MSG_TRUNC tells of anything longer still.
	buf := make([]byte, MaxDatagram+1)
	oob := make([]byte, pktinfoSpace)
	for {
		if d.srv.isDraining() {
			return nil
		}
		n, oobn, flags, from, err := d.pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			var ne net.Error
			switch {
			case d.srv.isDraining():
				return nil
			case errors.Is(err, net.ErrClosed):
				return err
			case errors.As(err, &ne) && ne.Timeout():
				// Only Shutdown sets a deadline; this one is not its.
				_ = d.pc.SetReadDeadline(time.Time{})
				continue
			case errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
				// An ICMP error about an earlier reply; it concerns that client only.
				continue
			}
			return err
		}
		local := d.local
		if d.pktinfo {
			dst, ok := parsePktinfo(oob[:oobn])
			if !ok {
				// Without the destination the reply could leave from the wrong address.
				logger.Warn("datagram without its destination address; dropped", "client", from.Addr().String())
				continue
			}
			local = net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(d.local.Port)))
		}
		remote := net.UDPAddrFromAddrPort(from)
		client := from.Addr().Unmap().String()
		oversize := n > MaxDatagram || flags&syscall.MSG_TRUNC != 0
		record := slices.Clone(buf[:min(n, MaxDatagram)])
		call, proc, refusal, ok := d.srv.admit(record, local, remote, client)
		if !ok {
			logger.Debug("malformed RPC datagram; dropped", "client", client, "bytes", n)
			continue
		}
		if refusal == nil && oversize {
			logger.Warn("RPC datagram over the size bound; answered GARBAGE_ARGS", "client", client,
				"bytes", n, "max", MaxDatagram, "call", d.srv.table.name(call.Prog, call.Vers, call.Proc))
			refusal = acceptedReply(call.XID, GarbageArgs)
		}
		if refusal != nil {
			d.send(refusal, local, from)
			continue
		}
		key := datagramCall{from: from, xid: call.XID}
		if !d.track(key) {
			continue // a retransmission of a call still being handled
		}
		if !d.srv.begin() {
			d.untrack(key)
			return nil
		}
		if proc.Exclusive {
			d.acquireAll()
			d.handle(call, proc, key, local)
			d.releaseAll()
			continue
		}
		d.slots <- struct{}{}
		d.workers.Add(1)
		go func() {
			defer d.workers.Done()
			defer func() { <-d.slots }()
			d.handle(call, proc, key, local)
		}()
	}
}

func (d *datagramSocket) track(key datagramCall) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.calls[key]; dup {
		return false
	}
	d.calls[key] = struct{}{}
	return true
}

func (d *datagramSocket) untrack(key datagramCall) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.calls, key)
}

func (d *datagramSocket) acquireAll() {
	for range MaxInFlight {
		d.slots <- struct{}{}
	}
}

func (d *datagramSocket) releaseAll() {
	for range MaxInFlight {
		<-d.slots
	}
}

// handle runs one call and sends its reply in one datagram.
func (d *datagramSocket) handle(call *Call, proc *Procedure, key datagramCall, local *net.UDPAddr) {
	defer d.srv.inflight.Done()
	defer d.untrack(key)
	parts, pipe, answered := d.srv.answer(call, proc)
	if pipe != nil {
		// A datagram is one buffer: the pipe's data is read into it.
		data, err := pipe.readAll()
		if err != nil {
			d.srv.logger.Error("reading a reply's data from its pipe; answered SYSTEM_ERR instead",
				"call", d.srv.table.name(call.Prog, call.Vers, call.Proc), "client", call.Client, "err", err)
			parts = [][]byte{acceptedReply(call.XID, SystemErr)}
		} else {
			parts = append(parts, data, xdr.Padding(len(data)))
		}
	}
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	var reply []byte
	if size > MaxDatagram {
		d.srv.logger.Error("reply over the UDP size bound; answered SYSTEM_ERR instead",
			"call", d.srv.table.name(call.Prog, call.Vers, call.Proc), "client", call.Client, "bytes", size, "max", MaxDatagram)
		reply = acceptedReply(call.XID, SystemErr)
	} else {
		reply = make([]byte, 0, size)
		for _, p := range parts {
			reply = append(reply, p...)
		}
	}
	d.srv.replies.put(answered) // copied into the datagram
	d.send(reply, local, key.from)
}

// send writes one reply datagram to a client, from the address its call reached.
func (d *datagramSocket) send(reply []byte, local *net.UDPAddr, to netip.AddrPort) {
	var oob []byte
	if d.pktinfo {
		oob = pktinfoFrom(local.AddrPort().Addr(), d.local.IP.To4() != nil)
	}
	if _, _, err := d.pc.WriteMsgUDPAddrPort(reply, oob, to); err != nil && !errors.Is(err, net.ErrClosed) {
		d.srv.logger.Debug("sending a reply datagram", "client", to.Addr().String(), "err", err)
	}
}

// wake makes a blocked read return, so that serve sees the server draining.
func (d *datagramSocket) wake() { _ = d.pc.SetReadDeadline(time.Now()) }
