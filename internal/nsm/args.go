package nsm

import (
	"errors"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// The protocol's structures (sm_inter.x), decoded exactly: a string over SM_MAXSTRLEN
// or with padding that is not zero, a short call or bytes left over is GARBAGE_ARGS.

// MaxName is SM_MAXSTRLEN, the bound on every name.
const MaxName = 1024

// privSize is the size of the opaque priv of mon and sm_status.
const privSize = 16

var (
	errLongName = errors.New("nsm: name over 1024 bytes")
	errPadding  = errors.New("nsm: padding not zero")
)

// name reads a string of at most MaxName bytes, its padding zeros.
func name(r *xdr.Reader) []byte {
	v := r.OpaqueMax(MaxName, errLongName)
	if r.Err() == nil {
		for _, b := range r.Buf[r.Pos-len(xdr.Padding(len(v))) : r.Pos] {
			if b != 0 {
				r.Fail(errPadding)
			}
		}
	}
	return v
}

// myID is struct my_id: whom to call back.
type myID struct {
	name             []byte
	prog, vers, proc uint32
}

func decodeMyID(r *xdr.Reader) myID {
	return myID{name: name(r), prog: r.Uint32(), vers: r.Uint32(), proc: r.Uint32()}
}

// monID is struct mon_id.
type monID struct {
	monName []byte
	my      myID
}

func decodeMonID(r *xdr.Reader) monID {
	return monID{monName: name(r), my: decodeMyID(r)}
}

// statChange is struct stat_chge: SM_NOTIFY's arguments.
type statChange struct {
	monName []byte
	state   int32
}

func decodeStatChange(r *xdr.Reader) statChange {
	return statChange{monName: name(r), state: int32(r.Uint32())}
}

func (s statChange) encode(w *xdr.Writer) {
	w.Opaque(s.monName)
	w.Uint32(uint32(s.state))
}

// done ends a decoding: GARBAGE_ARGS on an error or bytes left over.
func done(r *xdr.Reader) error {
	if r.Err() != nil || r.Remaining() != 0 {
		return oncrpc.ErrGarbageArgs
	}
	return nil
}

// noArgs checks that a call without arguments has none.
func noArgs(call *oncrpc.Call) error { return done(call.Args) }
