package nfs3

import "math"

// FSINFO (RFC 1813 section 3.3.19). The transfer sizes it offers decide how clients page
// through directories: a Linux client caches a directory in pages of 127 entries and
// starts a page over whenever the directory's change attribute moved since the page was
// begun. At 8 KiB a READDIRPLUS reply carries about 48 entries, so while another client
// changes the directory every reply moves the attribute before a page is full, and `ls`
// of a big busy directory never ends. With 1 MiB (what knfsd offers) the client starts at
// 64 KiB per reply, several hundred entries, so each reply completes at least one page.
// 1 MiB READ and WRITE is also the most a Linux client uses.

const (
	// TransferSize is the READ, WRITE and READDIR size offered.
	TransferSize = 1 << 20

	transferMultiple   = 4096
	fsinfoLink         = 0x0001
	fsinfoSymlink      = 0x0002
	fsinfoHomogeneous  = 0x0008
	fsinfoCanSetTime   = 0x0010
	fsinfoTimeDeltaNs  = 1 // layers keep nanosecond times
	fsinfoMaxFileBytes = math.MaxInt64
)

func fsinfo(rq *request) error {
	if ok, err := rq.objectReply(); !ok {
		return err
	}
	for _, v := range []uint32{
		TransferSize, TransferSize, transferMultiple, // rtmax, rtpref, rtmult
		TransferSize, TransferSize, transferMultiple, // wtmax, wtpref, wtmult
		TransferSize, // dtpref
	} {
		rq.res.Uint32(v)
	}
	rq.res.Uint64(fsinfoMaxFileBytes)
	rq.res.Uint32(0) // time_delta seconds
	rq.res.Uint32(fsinfoTimeDeltaNs)
	properties := uint32(fsinfoLink | fsinfoSymlink | fsinfoHomogeneous)
	if !rq.readOnly {
		properties |= fsinfoCanSetTime
	}
	rq.res.Uint32(properties)
	return nil
}
