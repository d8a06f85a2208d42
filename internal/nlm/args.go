package nlm

import (
	"errors"
	"math"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// The protocol's structures (XNFS, chapters 10 and 11: nlm_prot.x for versions 1 and 3,
// nlm4_prot.x for version 4), each with its decoder and encoder. Version 4 differs only
// in its offsets and lengths (64 bits, not 32). Decoding is exact: a value out of its
// type's range (a bool not 0 or 1, an enum past its last value), a string or netobj
// over its bound or with padding that is not zero, a short call or bytes left over are
// all errors (GARBAGE_ARGS), so no two encodings mean the same call. Decoded []byte fields alias the call's record.

// Bounds of the protocol: LM_MAXSTRLEN (caller_name), MAXNETOBJ_SZ (cookie, fh, oh) and
// MAXNAMELEN (nlm_notify's name).
const (
	MaxStrLen    = 1024
	MaxNetobj    = 1024
	MaxNotifyLen = MaxStrLen + 1
)

var (
	errTooLong  = errors.New("nlm: string or netobj over its bound")
	errBadBool  = errors.New("nlm: bool neither 0 nor 1")
	errBadEnum  = errors.New("nlm: enum value out of range")
	errTrailing = errors.New("nlm: bytes after the arguments")
	errPadding  = errors.New("nlm: padding not zero")
)

// Lock is nlm_lock (versions 1, 3) and nlm4_lock (version 4).
type Lock struct {
	CallerName     []byte
	FH, OH         []byte
	SVID           int32 // uppid in versions 1 and 3
	Offset, Length uint64
}

// TestArgs is nlm_testargs: TEST and TEST_MSG, and GRANTED and GRANTED_MSG.
type TestArgs struct {
	Cookie    []byte
	Exclusive bool
	Lock      Lock
}

// LockArgs is nlm_lockargs: LOCK, LOCK_MSG and NM_LOCK.
type LockArgs struct {
	Cookie           []byte
	Block, Exclusive bool
	Lock             Lock
	Reclaim          bool
	State            int32 // the client's NSM state
}

// CancelArgs is nlm_cancargs: CANCEL and CANCEL_MSG.
type CancelArgs struct {
	Cookie           []byte
	Block, Exclusive bool
	Lock             Lock
}

// UnlockArgs is nlm_unlockargs: UNLOCK and UNLOCK_MSG.
type UnlockArgs struct {
	Cookie []byte
	Lock   Lock
}

// Holder is nlm_holder: the lock in the way, in TEST's denial.
type Holder struct {
	Exclusive      bool
	SVID           int32
	OH             []byte
	Offset, Length uint64
}

// Res is nlm_res: the results of LOCK, CANCEL, UNLOCK, GRANTED, NM_LOCK and the
// arguments of their _RES messages.
type Res struct {
	Cookie []byte
	Stat   uint32
}

// TestRes is nlm_testres: TEST's results and TEST_RES's arguments. Holder is there when
// Stat is denied.
type TestRes struct {
	Cookie []byte
	Stat   uint32
	Holder Holder
}

// The share modes (fsh_mode: what others are denied) and access (fsh_access).
const (
	DenyNone      = 0 // fsm_DN
	DenyRead      = 1 // fsm_DR
	DenyWrite     = 2 // fsm_DW
	DenyReadWrite = 3 // fsm_DRW

	AccessNone      = 0 // fsa_NONE
	AccessRead      = 1 // fsa_R
	AccessWrite     = 2 // fsa_W
	AccessReadWrite = 3 // fsa_RW
)

// Share is nlm_share.
type Share struct {
	CallerName   []byte
	FH, OH       []byte
	Mode, Access uint32
}

// ShareArgs is nlm_shareargs: SHARE and UNSHARE.
type ShareArgs struct {
	Cookie  []byte
	Share   Share
	Reclaim bool
}

// ShareRes is nlm_shareres.
type ShareRes struct {
	Cookie   []byte
	Stat     uint32
	Sequence int32
}

// Notify is nlm_notify: FREE_ALL.
type Notify struct {
	Name  []byte
	State int32
}

// decoder wraps an xdr.Reader with the checks of exact decoding.
type decoder struct {
	r    *xdr.Reader
	vers uint32
}

func (d *decoder) uint32() uint32 { return d.r.Uint32() }
func (d *decoder) int32() int32   { return int32(d.r.Uint32()) }

func (d *decoder) bool() bool {
	v := d.r.Uint32()
	if v > 1 {
		d.r.Fail(errBadBool)
	}
	return v == 1
}

func (d *decoder) enum(last uint32) uint32 {
	v := d.r.Uint32()
	if v > last {
		d.r.Fail(errBadEnum)
	}
	return v
}

// opaque reads a string or netobj of at most max bytes, its padding zeros.
func (d *decoder) opaque(max int) []byte {
	v := d.r.OpaqueMax(max, errTooLong)
	if d.r.Err() == nil {
		for _, b := range d.r.Buf[d.r.Pos-len(xdr.Padding(len(v))) : d.r.Pos] {
			if b != 0 {
				d.r.Fail(errPadding)
			}
		}
	}
	return v
}

// offset reads an offset or a length: 32 bits before version 4.
func (d *decoder) offset() uint64 {
	if d.vers == Version4 {
		return d.r.Uint64()
	}
	return uint64(d.r.Uint32())
}

func (d *decoder) lock() Lock {
	var l Lock
	l.CallerName = d.opaque(MaxStrLen)
	l.FH = d.opaque(MaxNetobj)
	l.OH = d.opaque(MaxNetobj)
	l.SVID = d.int32()
	l.Offset = d.offset()
	l.Length = d.offset()
	return l
}

// done reports the decoding's outcome: the first error, or bytes left over.
func (d *decoder) done() error {
	if err := d.r.Err(); err != nil {
		return err
	}
	if d.r.Remaining() != 0 {
		return errTrailing
	}
	return nil
}

// encoder writes the structures. A holder's offset or length too large for the 32-bit
// fields of versions 1 and 3 is written as a range from the largest offset at most to
// the end of the file (length 0), which is what such a lock covers in a 32-bit world;
// any other value too large is written as the largest.
type encoder struct {
	w    *xdr.Writer
	vers uint32
}

func (e *encoder) offset(v uint64) {
	if e.vers == Version4 {
		e.w.Uint64(v)
		return
	}
	e.w.Uint32(uint32(min(v, math.MaxUint32)))
}

// span writes an offset and a length.
func (e *encoder) span(offset, length uint64) {
	if e.vers != Version4 && (offset > math.MaxUint32 || length > math.MaxUint32) {
		// What a 32-bit field cannot hold runs to the end of the file.
		length = 0
	}
	e.offset(offset)
	e.offset(length)
}

func (e *encoder) lock(l Lock) {
	e.w.Opaque(l.CallerName)
	e.w.Opaque(l.FH)
	e.w.Opaque(l.OH)
	e.w.Uint32(uint32(l.SVID))
	e.offset(l.Offset)
	e.offset(l.Length)
}

// DecodeTestArgs reads nlm_testargs of a version.
func DecodeTestArgs(r *xdr.Reader, vers uint32) (TestArgs, error) {
	d := &decoder{r, vers}
	a := TestArgs{Cookie: d.opaque(MaxNetobj), Exclusive: d.bool(), Lock: d.lock()}
	return a, d.done()
}

// Encode writes the arguments in a version's form.
func (a TestArgs) Encode(w *xdr.Writer, vers uint32) {
	e := &encoder{w, vers}
	w.Opaque(a.Cookie)
	w.Bool(a.Exclusive)
	e.lock(a.Lock)
}

// DecodeLockArgs reads nlm_lockargs of a version.
func DecodeLockArgs(r *xdr.Reader, vers uint32) (LockArgs, error) {
	d := &decoder{r, vers}
	a := LockArgs{Cookie: d.opaque(MaxNetobj), Block: d.bool(), Exclusive: d.bool(), Lock: d.lock(), Reclaim: d.bool(), State: d.int32()}
	return a, d.done()
}

// Encode writes the arguments in a version's form.
func (a LockArgs) Encode(w *xdr.Writer, vers uint32) {
	e := &encoder{w, vers}
	w.Opaque(a.Cookie)
	w.Bool(a.Block)
	w.Bool(a.Exclusive)
	e.lock(a.Lock)
	w.Bool(a.Reclaim)
	w.Uint32(uint32(a.State))
}

// DecodeCancelArgs reads nlm_cancargs of a version.
func DecodeCancelArgs(r *xdr.Reader, vers uint32) (CancelArgs, error) {
	d := &decoder{r, vers}
	a := CancelArgs{Cookie: d.opaque(MaxNetobj), Block: d.bool(), Exclusive: d.bool(), Lock: d.lock()}
	return a, d.done()
}

// Encode writes the arguments in a version's form.
func (a CancelArgs) Encode(w *xdr.Writer, vers uint32) {
	e := &encoder{w, vers}
	w.Opaque(a.Cookie)
	w.Bool(a.Block)
	w.Bool(a.Exclusive)
	e.lock(a.Lock)
}

// DecodeUnlockArgs reads nlm_unlockargs of a version.
func DecodeUnlockArgs(r *xdr.Reader, vers uint32) (UnlockArgs, error) {
	d := &decoder{r, vers}
	a := UnlockArgs{Cookie: d.opaque(MaxNetobj), Lock: d.lock()}
	return a, d.done()
}

// Encode writes the arguments in a version's form.
func (a UnlockArgs) Encode(w *xdr.Writer, vers uint32) {
	e := &encoder{w, vers}
	w.Opaque(a.Cookie)
	e.lock(a.Lock)
}

// DecodeRes reads nlm_res (the arguments of a _RES message); the status is one of the
// version's.
func DecodeRes(r *xdr.Reader, vers uint32) (Res, error) {
	d := &decoder{r, vers}
	a := Res{Cookie: d.opaque(MaxNetobj), Stat: d.enum(lastStat(vers))}
	return a, d.done()
}

// Encode writes nlm_res.
func (a Res) Encode(w *xdr.Writer) {
	w.Opaque(a.Cookie)
	w.Uint32(a.Stat)
}

// DecodeTestRes reads nlm_testres of a version.
func DecodeTestRes(r *xdr.Reader, vers uint32) (TestRes, error) {
	d := &decoder{r, vers}
	a := TestRes{Cookie: d.opaque(MaxNetobj), Stat: d.enum(lastStat(vers))}
	if a.Stat == StatDenied {
		a.Holder = Holder{Exclusive: d.bool(), SVID: d.int32(), OH: d.opaque(MaxNetobj), Offset: d.offset(), Length: d.offset()}
	}
	return a, d.done()
}

// Encode writes nlm_testres in a version's form.
func (a TestRes) Encode(w *xdr.Writer, vers uint32) {
	e := &encoder{w, vers}
	w.Opaque(a.Cookie)
	w.Uint32(a.Stat)
	if a.Stat == StatDenied {
		w.Bool(a.Holder.Exclusive)
		w.Uint32(uint32(a.Holder.SVID))
		w.Opaque(a.Holder.OH)
		e.span(a.Holder.Offset, a.Holder.Length)
	}
}

// DecodeShareArgs reads nlm_shareargs (versions 3 and 4 alike).
func DecodeShareArgs(r *xdr.Reader) (ShareArgs, error) {
	d := &decoder{r: r}
	a := ShareArgs{Cookie: d.opaque(MaxNetobj)}
	a.Share = Share{CallerName: d.opaque(MaxStrLen), FH: d.opaque(MaxNetobj), OH: d.opaque(MaxNetobj),
		Mode: d.enum(DenyReadWrite), Access: d.enum(AccessReadWrite)}
	a.Reclaim = d.bool()
	return a, d.done()
}

// Encode writes nlm_shareargs.
func (a ShareArgs) Encode(w *xdr.Writer) {
	w.Opaque(a.Cookie)
	w.Opaque(a.Share.CallerName)
	w.Opaque(a.Share.FH)
	w.Opaque(a.Share.OH)
	w.Uint32(a.Share.Mode)
	w.Uint32(a.Share.Access)
	w.Bool(a.Reclaim)
}

// DecodeShareRes reads nlm_shareres of a version.
func DecodeShareRes(r *xdr.Reader, vers uint32) (ShareRes, error) {
	d := &decoder{r, vers}
	a := ShareRes{Cookie: d.opaque(MaxNetobj), Stat: d.enum(lastStat(vers)), Sequence: d.int32()}
	return a, d.done()
}

// Encode writes nlm_shareres.
func (a ShareRes) Encode(w *xdr.Writer) {
	w.Opaque(a.Cookie)
	w.Uint32(a.Stat)
	w.Uint32(uint32(a.Sequence))
}

// DecodeNotify reads nlm_notify.
func DecodeNotify(r *xdr.Reader) (Notify, error) {
	d := &decoder{r: r}
	a := Notify{Name: d.opaque(MaxNotifyLen), State: d.int32()}
	return a, d.done()
}

// Encode writes nlm_notify.
func (a Notify) Encode(w *xdr.Writer) {
	w.Opaque(a.Name)
	w.Uint32(uint32(a.State))
}

// noArgs checks that a call without arguments has none.
func noArgs(r *xdr.Reader) error {
	if r.Remaining() != 0 {
		return errTrailing
	}
	return nil
}
