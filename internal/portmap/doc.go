// Package portmap is the portmapper (program 100000: PMAP v2, rpcbind v3 and v4, RFC
// 1833): it tells clients where this process's programs answer, so that `mount -t nfs
// host:/ /mnt`, `showmount -e host` and `rpcinfo -p host` need no port options. When the
// system runs its own rpcbind, Register puts the same mappings there instead (and
// Unregister takes them away).
//
// What it answers: NULL, SET, UNSET, DUMP in every version; GETPORT in v2; GETADDR and
// GETTIME in v3 and v4; GETVERSADDR in v4. CALLIT (BCAST) and INDIRECT, which would make
// the server call other programs on anyone's behalf, are not offered, nor are the
// address-translation and statistics procedures (PROC_UNAVAIL). The services given in
// Config are listed always; SET and UNSET are taken only from privileged ports of this
// host (local.go) and cannot touch them; anything else asking is denied with AUTH_TOOWEAK.
// Arguments are decoded exactly (args.go): a short, long or oversized call is
// GARBAGE_ARGS and changes nothing.
//
// Files:
//
//	portmap.go   constants, Service, Config, New, the dispatch tables of the three versions
//	registry.go  the list of mappings (bounded, in registration order)
//	args.go      the argument decoders: mapping (v2), rpcb (v3, v4)
//	uaddr.go     universal addresses and netids
//	local.go     who may SET and UNSET; the netid of a call's transport
//	set.go       SET (v2 and v3/v4)
//	unset.go     UNSET (v2 and v3/v4)
//	getport.go   GETPORT (v2)
//	getaddr.go   GETADDR (v3, v4), GETVERSADDR (v4)
//	dump.go      DUMP (v2 and v3/v4)
//	gettime.go   GETTIME (v3, v4)
//	register.go  Register and Unregister with the system's rpcbind; Probe
//
// NULL is in the tables (portmap.go).
//
// Lock order: registry.mu is a leaf, held for a slice operation only.
package portmap
