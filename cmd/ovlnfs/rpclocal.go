package main

import (
	"encoding/binary"
	"net"
	"sort"
	"sync"
)

// Calls the front end answers itself, without go-nfs: go-nfs v0.0.4 dispatches on program
// and procedure only, so an NFSv4 COMPOUND lands in its v3 GETATTR and an NFS_ACL probe or a
// MOUNT EXPORT gets PROC_UNAVAIL. Clients decide what to do next from the RPC-level answer
// (RFC 5531): PROG_MISMATCH makes mount.nfs fall back to v3, PROG_UNAVAIL for NFS_ACL makes
// Linux stop asking for ACLs, and EXPORT is how showmount and libnfs discover the export.

// RPC reply codes (RFC 5531 section 9).
const (
	msgAccepted = 0
	msgDenied   = 1

	acceptSuccess      = 0
	acceptProgUnavail  = 1
	acceptProgMismatch = 2
	acceptProcUnavail  = 3

	rejectRPCMismatch = 0

	rpcVersion = 2

	nfsVersion   = 3
	mountVersion = 3

	mountProcNull    = 0
	mountProcMnt     = 1
	mountProcDump    = 2
	mountProcUmnt    = 3
	mountProcUmntAll = 4
	mountProcExport  = 5

	// exportPath is the one export; Mount in handler.go accepts directories below it too.
	exportPath = "/"

	// maxMountEntries bounds the DUMP list: a client that mounts and never unmounts must
	// not grow it forever. The list is advisory (RFC 1813 says so), so forgetting is safe.
	maxMountEntries = 1024
)

// callHeader is the part of an RPC call the front end dispatches on.
type callHeader struct {
	xid, msgType, rpcVers, prog, vers, proc uint32
	argsAt                                  int // offset of the procedure's arguments
	cred                                    caller
	badCred                                 bool // an AUTH_UNIX credential that does not decode
}

func parseCallHeader(record []byte) (callHeader, bool) {
	r := xdrReader{buf: record}
	h := callHeader{xid: r.uint32(), msgType: r.uint32(), rpcVers: r.uint32()}
	h.prog, h.vers, h.proc = r.uint32(), r.uint32(), r.uint32()
	flavor := r.uint32()
	body := r.opaque()
	if r.err == nil {
		h.cred, h.badCred = parseCredential(flavor, body)
	}
	r.skipAuth() // verifier
	h.argsAt = r.pos
	return h, r.err == nil && h.msgType == rpcCall
}

// acceptedReply starts a MSG_ACCEPTED reply with an AUTH_NULL verifier.
func acceptedReply(xid, acceptStat uint32) *xdrWriter {
	w := &xdrWriter{}
	w.uint32(xid)
	w.uint32(rpcReply)
	w.uint32(msgAccepted)
	w.uint32(0) // verifier flavor AUTH_NULL
	w.uint32(0) // verifier length
	w.uint32(acceptStat)
	return w
}

// mountTable is what DUMP reports: who mounted what, as the MNT and UMNT calls that
// passed through said.
type mountTable struct {
	mu      sync.Mutex
	entries map[mountEntry]struct{}
}

type mountEntry struct{ host, dir string }

func newMountTable() *mountTable { return &mountTable{entries: make(map[mountEntry]struct{})} }

func (m *mountTable) add(host, dir string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.entries) >= maxMountEntries {
		clear(m.entries)
	}
	m.entries[mountEntry{host, dir}] = struct{}{}
}

func (m *mountTable) remove(host, dir string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, mountEntry{host, dir})
}

func (m *mountTable) removeHost(host string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for e := range m.entries {
		if e.host == host {
			delete(m.entries, e)
		}
	}
}

// list returns the entries sorted, so DUMP answers are stable.
func (m *mountTable) list() []mountEntry {
	m.mu.Lock()
	out := make([]mountEntry, 0, len(m.entries))
	for e := range m.entries {
		out = append(out, e)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].host != out[j].host {
			return out[i].host < out[j].host
		}
		return out[i].dir < out[j].dir
	})
	return out
}

// hostOf is the client name DUMP reports: the address, as there is no reverse lookup.
func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// localReply answers the calls go-nfs cannot; nil passes the call on to go-nfs.
func (fe *frontEnd) localReply(h callHeader, record []byte, client string) []byte {
	if h.rpcVers != rpcVersion {
		w := &xdrWriter{}
		w.uint32(h.xid)
		w.uint32(rpcReply)
		w.uint32(msgDenied)
		w.uint32(rejectRPCMismatch)
		w.uint32(rpcVersion) // low
		w.uint32(rpcVersion) // high
		return w.buf
	}
	if h.badCred {
		return authErrorReply(h.xid)
	}
	switch h.prog {
	case progNFS:
		if h.vers != nfsVersion {
			return progMismatch(h.xid, nfsVersion)
		}
		return nil
	case progMount:
		if h.vers != mountVersion {
			return progMismatch(h.xid, mountVersion)
		}
		switch h.proc {
		case mountProcNull, mountProcMnt, mountProcUmnt:
			if h.proc == mountProcUmnt {
				r := xdrReader{buf: record, pos: h.argsAt}
				if dir := r.opaque(); r.err == nil {
					fe.mounts.remove(client, string(dir))
				}
			}
			return nil
		case mountProcDump:
			w := acceptedReply(h.xid, acceptSuccess)
			for _, e := range fe.mounts.list() {
				w.uint32(1) // value follows
				w.opaque([]byte(e.host))
				w.opaque([]byte(e.dir))
			}
			w.uint32(0)
			return w.buf
		case mountProcUmntAll:
			fe.mounts.removeHost(client)
			return acceptedReply(h.xid, acceptSuccess).buf
		case mountProcExport:
			w := acceptedReply(h.xid, acceptSuccess)
			w.uint32(1) // an export follows
			w.opaque([]byte(exportPath))
			w.uint32(0) // no groups: every client may mount it
			w.uint32(0) // no more exports
			return w.buf
		}
		return acceptedReply(h.xid, acceptProcUnavail).buf
	}
	// NFS_ACL, NLM, the portmapper and anything else: not served here.
	return acceptedReply(h.xid, acceptProgUnavail).buf
}

func progMismatch(xid, version uint32) []byte {
	w := acceptedReply(xid, acceptProgMismatch)
	w.uint32(version) // low
	w.uint32(version) // high
	return w.buf
}

// describeReply names a locally built reply's outcome for the debug log.
func describeReply(reply []byte) string {
	r := xdrReader{buf: reply, pos: 8}
	if r.uint32() == msgDenied {
		if r.uint32() == rejectAuthError {
			return "AUTH_ERROR"
		}
		return "RPC_MISMATCH"
	}
	r.skipAuth()
	switch r.uint32() {
	case acceptSuccess:
		return "SUCCESS"
	case acceptProgUnavail:
		return "PROG_UNAVAIL"
	case acceptProgMismatch:
		return "PROG_MISMATCH"
	case acceptProcUnavail:
		return "PROC_UNAVAIL"
	}
	return "?"
}

// fixAcceptStat corrects go-nfs v0.0.4's accept_stat numbering in place: its enum leaves out
// PROG_MISMATCH, so its PROC_UNAVAIL, GARBAGE_ARGS and SYSTEM_ERR go out as PROG_MISMATCH
// (without the version range a client then reads past the record), PROC_UNAVAIL and
// GARBAGE_ARGS. go-nfs never sends a real PROG_MISMATCH: version checks happen here first.
func fixAcceptStat(record []byte) {
	r := xdrReader{buf: record, pos: 4}
	if r.uint32() != rpcReply || r.uint32() != msgAccepted {
		return
	}
	r.skipAuth()
	at := r.pos
	stat := r.uint32()
	if r.err == nil && stat >= acceptProgMismatch && stat <= acceptProcUnavail+1 {
		binary.BigEndian.PutUint32(record[at:], stat+1)
	}
}
