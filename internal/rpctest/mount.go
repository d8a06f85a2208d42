package rpctest

import (
	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Typed MOUNT calls besides MNT (nfs.go): the export list and the DUMP list.

// mountCall sends a MOUNT call that must be accepted with SUCCESS and returns a reader of
// its results.
func (c *Client) mountCall(proc mount.Proc, args []byte) *xdr.Reader {
	c.t.Helper()
	return Accepted(c.t, c.Call(mount.ProgramNumber, mount.Version, uint32(proc), args), oncrpc.Success)
}

// Export returns the directories EXPORT lists (their groups are read past).
func (c *Client) Export() []string {
	c.t.Helper()
	r := c.mountCall(mount.ProcExport, nil)
	var exports []string
	for r.Bool() {
		exports = append(exports, string(r.Opaque()))
		for r.Bool() { // groups
			r.Opaque()
		}
	}
	if r.Err() != nil {
		c.t.Fatalf("EXPORT reply: %v", r.Err())
	}
	return exports
}

// ExportGroups returns what EXPORT lists: each directory's groups.
func (c *Client) ExportGroups() map[string][]string {
	c.t.Helper()
	r := c.mountCall(mount.ProcExport, nil)
	out := map[string][]string{}
	for r.Bool() {
		dir := string(r.Opaque())
		out[dir] = []string{}
		for r.Bool() {
			out[dir] = append(out[dir], string(r.Opaque()))
		}
	}
	if r.Err() != nil {
		c.t.Fatalf("EXPORT reply: %v", r.Err())
	}
	return out
}

// Dump returns the mounts DUMP lists, each as "host:dir".
func (c *Client) Dump() []string {
	c.t.Helper()
	r := c.mountCall(mount.ProcDump, nil)
	var out []string
	for r.Bool() {
		host, dir := string(r.Opaque()), string(r.Opaque())
		out = append(out, host+":"+dir)
	}
	if r.Err() != nil {
		c.t.Fatalf("DUMP reply: %v", r.Err())
	}
	return out
}

// Umnt tells the server the client no longer uses its mount of dir.
func (c *Client) Umnt(dir string) {
	c.t.Helper()
	c.mountCall(mount.ProcUmnt, Opaque([]byte(dir)))
}

// UmntAll tells the server the client no longer uses any of its mounts.
func (c *Client) UmntAll() {
	c.t.Helper()
	c.mountCall(mount.ProcUmntAll, nil)
}
