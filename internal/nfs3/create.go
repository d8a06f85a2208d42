package nfs3

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"time"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// create answers CREATE in its three modes.
func create(rq *request) error {
	d := rq.dirArgs()
	how := rq.args.Uint32()
	var s sattr3
	var verf []byte
	switch how {
	case createUnchecked, createGuarded:
		s = getSattr3(rq.args)
	case createExclusive:
		verf = rq.args.Fixed(8)
	default:
		rq.args.Fail(errBadEnum)
	}
	if err := rq.decoded(); err != nil {
		return err
	}
	dirPre, err := rq.checkNewEntry(&d)
	if err == nil {
		if how == createExclusive {
			err = rq.createExclusive(d.child(), verf)
		} else {
			err = rq.createChecked(d.child(), how == createGuarded, &s)
		}
	}
	rq.newObjectReply(&d, dirPre, err)
	return nil
}

// createChecked is UNCHECKED and GUARDED. UNCHECKED on an existing regular file keeps its
// data unless the client asked for a size (as Linux's nfsd does, and what `>` through an
// NFS mount expects: the size-0 SETATTR is how the client truncates).
func (rq *request) createChecked(p string, guarded bool, s *sattr3) error {
	mode := newMode(s, 0o644)
	f, err := rq.namespace().OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, billyunion.FileMode(mode))
	if err == nil {
		if err := f.Close(); err != nil {
			return err
		}
		rest := *s
		rest.mode = nil
		if mode&0o7000 != 0 {
			// Creation masks special bits like open(2) with a umask would; set them as asked.
			rest.mode = &mode
		}
		if rest.size != nil && *rest.size == 0 {
			rest.size = nil
		}
		if rest.empty() {
			return nil
		}
		return rq.applyAsCaller(p, &rest)
	}
	if !errors.Is(err, syscall.EEXIST) || guarded {
		return err
	}
	st, serr := rq.stat(p)
	if serr != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return syscall.EEXIST
	}
	if s.size == nil {
		return nil
	}
	only := sattr3{size: s.size}
	if err := rq.who.maySetattr(st, &only); err != nil {
		return err
	}
	return rq.apply(p, &only, st)
}

// createExclusive stores the client's verifier in the new file's atime and mtime seconds,
// where a retransmission finds it; the client sets the real times and mode right after
// with SETATTR.
func (rq *request) createExclusive(p string, verf []byte) error {
	atime, mtime := binary.BigEndian.Uint32(verf), binary.BigEndian.Uint32(verf[4:])
	matches := func() bool {
		st, err := rq.stat(p)
		return err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG &&
			uint32(st.Atim.Sec) == atime && uint32(st.Mtim.Sec) == mtime
	}
	f, err := rq.namespace().OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, syscall.EEXIST) && matches() {
			return nil // a retransmission of the create that made it
		}
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return rq.namespace().Chtimes(p, time.Unix(int64(atime), 0), time.Unix(int64(mtime), 0))
}
