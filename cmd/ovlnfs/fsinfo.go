package main

import "math"

// FSINFO, answered by the front end because the transfer sizes it advertises decide how
// clients page through directories. go-nfs v0.0.4 offers 8 KiB READDIR replies. A Linux
// client caches a directory in pages of 127 entries and starts a page over whenever the
// directory's change attribute moved since the page was begun; at 8 KiB a READDIRPLUS
// reply carries about 48 entries, so while another client changes the directory every
// reply moves the attribute before a page is full, and `ls` of a big busy directory never
// ends. With 1 MiB (what knfsd offers) the client starts at 64 KiB per reply, several
// hundred entries, so each reply completes at least one page and the listing advances.
//
// The READ and WRITE maxima are 1 MiB, the most a Linux client uses; go-nfs's 1 GiB was
// capped by clients anyway.

const (
	procFsinfo = 19

	transferSize       = 1 << 20
	transferMultiple   = 4096
	fsinfoLink         = 0x0001
	fsinfoSymlink      = 0x0002
	fsinfoHomogeneous  = 0x0008
	fsinfoCanSetTime   = 0x0010
	fsinfoTimeDeltaNs  = 1 // layers keep nanosecond times
	fsinfoMaxFileBytes = math.MaxInt64
)

func (p *localProc) fsinfo() bool {
	fh := p.r.opaque()
	if p.r.err != nil {
		return false
	}
	_, _, _, st, err := p.statHandle(fh)
	p.w.uint32(nfsStatusOf(err))
	p.w.postOpAttr(st, p.fsid)
	if err != nil {
		return true
	}
	for _, v := range []uint32{
		transferSize, transferSize, transferMultiple, // rtmax, rtpref, rtmult
		transferSize, transferSize, transferMultiple, // wtmax, wtpref, wtmult
		transferSize, // dtpref
	} {
		p.w.uint32(v)
	}
	p.w.uint64(fsinfoMaxFileBytes)
	p.w.uint32(0) // time_delta seconds
	p.w.uint32(fsinfoTimeDeltaNs)
	properties := uint32(fsinfoLink | fsinfoSymlink | fsinfoHomogeneous)
	if !p.fe.readOnly {
		properties |= fsinfoCanSetTime
	}
	p.w.uint32(properties)
	return true
}
