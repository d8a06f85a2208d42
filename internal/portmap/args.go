package portmap

import (
	"errors"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// The arguments of the procedures, decoded with xdr.Reader (which never panics) and held
// to the protocol's shapes exactly: a call with bytes left over, or a string over
// maxString, is GARBAGE_ARGS.

// maxString bounds the strings of an rpcb (netid, universal address, owner). RFC 1833
// sets no bound; these are far above any real one (a universal address is at most 51
// bytes).
const maxString = 255

var errLongString = errors.New("portmap: string over 255 bytes")

// pmapMapping is PMAP v2's struct mapping.
type pmapMapping struct {
	prog, vers, prot, port uint32
}

// rpcb is rpcbind's struct rpcb.
type rpcb struct {
	prog, vers         uint32
	netid, addr, owner string
}

// decodeMapping reads a mapping, the arguments of PMAP v2 SET, UNSET and GETPORT.
func decodeMapping(r *xdr.Reader) (pmapMapping, error) {
	m := pmapMapping{prog: r.Uint32(), vers: r.Uint32(), prot: r.Uint32(), port: r.Uint32()}
	if r.Err() != nil || r.Remaining() != 0 {
		return pmapMapping{}, oncrpc.ErrGarbageArgs
	}
	return m, nil
}

// decodeRPCB reads an rpcb, the arguments of rpcbind SET, UNSET, GETADDR and GETVERSADDR.
func decodeRPCB(r *xdr.Reader) (rpcb, error) {
	var b rpcb
	b.prog, b.vers = r.Uint32(), r.Uint32()
	netid := r.OpaqueMax(maxString, errLongString)
	addr := r.OpaqueMax(maxString, errLongString)
	owner := r.OpaqueMax(maxString, errLongString)
	if r.Err() != nil || r.Remaining() != 0 {
		return rpcb{}, oncrpc.ErrGarbageArgs
	}
	b.netid, b.addr, b.owner = string(netid), string(addr), string(owner)
	return b, nil
}

// noArgs checks that a call without arguments has none.
func noArgs(r *xdr.Reader) error {
	if r.Remaining() != 0 {
		return oncrpc.ErrGarbageArgs
	}
	return nil
}

func (m pmapMapping) encode(w *xdr.Writer) {
	w.Uint32(m.prog)
	w.Uint32(m.vers)
	w.Uint32(m.prot)
	w.Uint32(m.port)
}

func (b rpcb) encode(w *xdr.Writer) {
	w.Uint32(b.prog)
	w.Uint32(b.vers)
	w.String(b.netid)
	w.String(b.addr)
	w.String(b.owner)
}
