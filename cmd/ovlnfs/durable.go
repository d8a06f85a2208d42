package main

import (
	"encoding/binary"
)

// WRITE and COMMIT durability. go-nfs answers every WRITE "FILE_SYNC" and every COMMIT
// at once, yet never syncs: a client then drops its copy of data that sits only in the
// server's page cache. The front end holds back the reply of a FILE_SYNC or DATA_SYNC
// WRITE and of a COMMIT until the file has been fsynced, and marks UNSTABLE WRITEs as
// such, so the client COMMITs them later (RFC 1813 sections 3.3.7 and 3.3.21). The write
// verifier go-nfs sends is drawn at random when the server starts, so after a restart
// clients see it change and resend what they had not seen committed.

// syncer makes a file of the union durable.
type syncer interface {
	Sync(path string) error
}

// committedFromEnd is where WRITE3resok's `committed` sits, counted from the end of the
// reply: committed (4 bytes), then the 8-byte verifier.
const committedFromEnd = 12

// makeDurable syncs the file of a successful WRITE or COMMIT reply as its stability asks
// and returns the reply to send with its status.
func (fe *frontEnd) makeDurable(call *pendingCall, record []byte, statusAt int) ([]byte, uint32) {
	if call.proc == procWrite && len(record)-committedFromEnd < statusAt+4 {
		return record, nfsStatusOK // not a WRITE3resok go-nfs would write; leave it
	}
	if !call.syncWrite {
		binary.BigEndian.PutUint32(record[len(record)-committedFromEnd:], stableUnstable)
		return record, nfsStatusOK
	}
	err := error(nil)
	f, path, herr := fe.handler.FromHandle(call.syncHandle)
	if herr == nil {
		err = fe.syncer.Sync(joinUnion(f, path))
	} else {
		err = herr
	}
	if err == nil {
		// Logged before the reply is written: the durability test reads this order.
		fe.logger.Debug("fsync before reply", "xid", call.xid, "call", procName(call.prog, call.proc))
		return record, nfsStatusOK
	}
	fe.logger.Error("fsync failed; the client is told NFS3ERR_IO", "call", procName(call.prog, call.proc), "err", err)
	// WRITE3resfail and COMMIT3resfail carry the wcc_data alone: drop what follows it
	// (count, committed and verifier, or the verifier).
	tail := 8
	if call.proc == procWrite {
		tail = 16
	}
	out := append([]byte(nil), record[:len(record)-tail]...)
	binary.BigEndian.PutUint32(out[statusAt:], nfsStatusIO)
	return out, nfsStatusIO
}
