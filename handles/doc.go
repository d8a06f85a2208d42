// Package handles turns union objects into NFS file handles and back.
//
// A handle names an object by its persistent identity (billyunion.ObjectID:
// the kernel file handle of the object it stems from), never by a path or a
// counter, so it survives copy-up, renames of the object or its ancestors,
// server restarts and cache eviction. To find the object again quickly a
// handle of a non-directory also carries a hint: the ObjectID of the
// directory it was in and its name there. Resolution tries, in order, the
// cache, the hint, the union's moves index and the kernel's own
// reconnection, and accepts a candidate path only after the union confirms
// that the object there has the handle's ObjectID. So a stale hint, a
// changed layer or a forged handle costs lookups and ends in ESTALE, never
// in another object. docs/handles.md describes the format.
//
// Files:
//
//	format.go   the wire format: encode, decode, validation
//	handles.go  Handles: ToHandle, FromHandle, the resolution order
//
// # Lock order
//
// The only lock is the path cache's own (golang-lru), a leaf held for a
// map operation. Nothing here holds a lock across union or layer I/O.
package handles
