// Package nlm is the Network Lock Manager protocol (program 100021; versions 1 and 3
// with 32-bit offsets, version 4 with 64-bit ones; XNFS chapters 9 to 11): the byte-range
// locks that Linux's fcntl and flock and macOS's lockd send over NFSv3, and DOS share
// reservations. The locks themselves are held by package locks; this package decodes
// the calls, names the file (Config.Key: the object's identity, not the handle's bytes)
// and the owner (the client's address and caller_name, its svid and oh), asks the status
// monitor (package nsm) to remember every client that takes a lock so that it can be
// told when this server restarts, and makes the calls the protocol has the server make:
//
//   - a blocked LOCK is answered BLOCKED; once a release lets it through, the lock is
//     taken and the client told with a GRANTED call (GRANTED_MSG when the request came as
//     LOCK_MSG) to its lock manager, found through its portmapper, over the transport
//     the request came on. A client that refuses the grant (it stopped waiting) or cannot
//     be reached after Config.GrantAttempts tries gets the lock released again;
//   - the asynchronous forms (TEST_MSG, LOCK_MSG, CANCEL_MSG, UNLOCK_MSG) are answered
//     with an empty reply and their results sent back as TEST_RES, LOCK_RES, CANCEL_RES
//     and UNLOCK_RES calls;
//   - a client's reboot (SM_NOTIFY, through Rebooted) or FREE_ALL drops everything it held.
//
// What the server is sent as a client (GRANTED, GRANTED_MSG) is answered denied: nothing
// here waits for a lock. The _RES messages it receives are checked and dropped, except
// GRANTED_RES, which settles a GRANTED_MSG.
//
// Files:
//
//	doc.go       this
//	nlm.go       constants, statuses, Config, Server, New, Close, the dispatch tables
//	args.go      the protocol's structures: decoders (exact) and encoders
//	request.go   what every procedure does first: the client, the owner, the file
//	test.go      TEST
//	lock.go      LOCK (and NM_LOCK's body)
//	cancel.go    CANCEL
//	unlock.go    UNLOCK
//	granted.go   GRANTED and GRANTED_MSG received (refused); GRANTED_RES received
//	msg.go       TEST_MSG, LOCK_MSG, CANCEL_MSG, UNLOCK_MSG
//	res.go       TEST_RES, LOCK_RES, CANCEL_RES, UNLOCK_RES received
//	share.go     SHARE
//	unshare.go   UNSHARE
//	nmlock.go    NM_LOCK
//	freeall.go   FREE_ALL
//	callback.go  calls to clients: announcing grants (with retries), sending _RES
//	hosts.go     the clients known, their monitoring, Rebooted, the janitor
//
// Lock order: Server.mu is a leaf, held for map operations on hosts, deliveries and
// awaited GRANTED_RES replies; it is never held while package locks' lock is taken (the
// table is consulted first, or after) nor across a network call or a status monitor
// write. Callbacks run on goroutines of their own, bounded by Config.MaxCallbacks.
package nlm
