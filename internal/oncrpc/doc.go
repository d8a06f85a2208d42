// Package oncrpc is the ONC RPC layer of the server (RFC 5531): it reads calls from TCP
// connections (record marking) and UDP sockets (one call per datagram), decodes the call
// header and the AUTH_UNIX credential, dispatches each call through one table of programs
// and procedures, and writes the replies. It knows nothing of NFS: the programs it serves
// (NFSv3, MOUNT, the portmapper) are registered as tables of handlers. A small client
// (Invoke) makes the few calls the server itself sends.
//
// Files, one concern each:
//
//	record.go    record marking: reading a record's fragments, writing a reply in one writev
//	buffers.go   record memory recycled in two sizes (small calls, 1 MiB WRITEs)
//	splice.go    reply data by reference: a pool of pipes, file pages spliced into a pipe
//	             and from it into the socket behind the header (READ's data, uncopied)
//	message.go   call header, reply headers, the RPC constants (defined here only)
//	auth.go      AUTH_UNIX credentials
//	program.go   the dispatch table: Program, Procedure, Handler, Call, Reply
//	dispatch.go  what every transport does with a call: admit (decode, look up or refuse),
//	             answer; Replies recycled once written
//	server.go    Server: Config, New, Serve, Shutdown (listening and draining)
//	conn.go      one TCP connection: bounded concurrency, a lone call answered on the
//	             reading goroutine, retransmission filter
//	udp.go       one UDP socket: ServeUDP, datagram size bound, retransmission filter
//	pktinfo.go   a wildcard UDP socket's per-datagram destination address (IP_PKTINFO)
//	client.go    Invoke: one call over a stream or a datagram socket
//
// Concurrency. Linux and macOS put a whole mount on one connection, so one slow call (a
// big copy-up, a large READ) must not stall the LOOKUPs behind it: up to MaxInFlight calls
// of one connection run at once, and replies go out in whatever order they finish
// (clients match them by XID). A call that is alone on its TCP connection is answered on
// the goroutine that read it, which spares a thread wake-up per call to a client making
// one call at a time; if it takes longer than a short budget, reading moves to a new
// goroutine, so a slow call still never holds up the calls behind it. A Procedure marked
// Exclusive (MOUNT's) runs alone: after every call read before it has finished, before any
// call read after it starts. A UDP socket is treated as one connection shared by all its
// clients.
//
// # Lock order
//
// Server.mu, then conn.mu or datagramSocket.mu; conn.wmu (one reply record on the socket
// at a time) is a leaf taken with none of them held; Pipes.mu is a leaf held for its free
// list only. A pipe is filled from its file before conn.wmu is taken: under it, only the
// pipe-to-socket splice, which does no file I/O. No lock is held while a handler runs
// or while a socket is read; conn.wmu is held across the socket write of one reply. A UDP
// reply is one datagram, written without a lock.
package oncrpc
