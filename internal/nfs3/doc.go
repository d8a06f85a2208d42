// Package nfs3 answers the NFSv3 program (RFC 1813) over the union: every procedure,
// decoded from the call's XDR arguments, made into union calls, and encoded back, with
// the union's real attributes and errnos.
//
// Files, one procedure each, named after it:
//
//	null.go getattr.go setattr.go lookup.go access.go readlink.go read.go write.go
//	create.go mkdir.go symlink.go mknod.go remove.go rmdir.go rename.go link.go
//	readdir.go readdirplus.go fsstat.go fsinfo.go pathconf.go commit.go
//
// and what they share:
//
//	procedures.go  the dispatch table: procedure numbers, names, functions
//	server.go      Config, New, the request a procedure works on, handle resolution
//	status.go      StatusOf: the one place an error becomes an nfsstat3
//	args.go        file handles, diropargs3, name checks
//	attr.go        fattr3, post_op_attr, wcc_data, sattr3
//	enums.go       the protocol's enumerations
//	permission.go  what the caller may do (ACCESS, directory changes, SETATTR)
//	newobject.go   what CREATE, MKDIR, SYMLINK and MKNOD share
//	openfiles.go   the union files kept open between READs, WRITEs and COMMITs
//	cookies.go     directory cookies by name hash, the snapshots' cookie orders
//
// A procedure returns an error only for arguments that do not decode (oncrpc answers
// GARBAGE_ARGS); every other failure is an errno or a status error of status.go, written
// as the result's status by request.status.
//
// # Lock order
//
// openFiles.mu is a leaf: it is held for map operations and to close a descriptor, never
// while a file is opened, read, written or synced. cookieOrders.mu is a leaf held for map
// operations only; orders are built with it released. Neither is held with the other. Procedures
// run concurrently (up to 32 per connection, package oncrpc) and take no lock of their
// own; the union orders concurrent changes under its directory locks.
package nfs3
