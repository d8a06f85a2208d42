package nsm

import (
	"context"
	"net"
	"net/netip"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// mon is SM_MON from a lock manager of this host: call it back when mon_name says it
// rebooted. Taken from a loopback address only (rpc.statd's rule), kept in memory,
// bounded; anything else is stat_fail. A request made before is not made twice.
func (m *Monitor) mon(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	id := decodeMonID(call.Args)
	priv := call.Args.Fixed(privSize)
	if err := done(call.Args); err != nil {
		return err
	}
	ok := m.addWatch(call, id, priv)
	if ok {
		reply.Uint32(statSucc)
	} else {
		reply.Uint32(statFail)
	}
	reply.Uint32(uint32(m.state))
	return nil
}

func (m *Monitor) addWatch(call *oncrpc.Call, id monID, priv []byte) bool {
	if !fromLoopback(call) {
		m.logger.Warn("SM_MON refused: not from this host", "client", call.Client, "mon_name", string(id.monName))
		return false
	}
	if len(id.monName) == 0 {
		return false
	}
	w := watch{monName: string(id.monName), myName: string(id.my.name), prog: id.my.prog, vers: id.my.vers, proc: id.my.proc}
	copy(w.priv[:], priv)
	if a, err := netip.ParseAddr(w.monName); err == nil {
		w.monAddr = a.Unmap()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.watches {
		if x == w {
			return true
		}
	}
	if len(m.watches) >= m.cfg.MaxWatches {
		m.logger.Warn("SM_MON refused: too many monitor requests", "max", m.cfg.MaxWatches)
		return false
	}
	m.watches = append(m.watches, w)
	m.logger.Debug("SM_MON", "mon_name", w.monName, "prog", w.prog, "vers", w.vers, "proc", w.proc)
	return true
}

// fromLoopback reports whether a call came from this host's loopback.
func fromLoopback(call *oncrpc.Call) bool {
	a, ok := callerAddr(call)
	return ok && a.IsLoopback()
}

// callerAddr is the address a call came from.
func callerAddr(call *oncrpc.Call) (netip.Addr, bool) {
	switch a := call.RemoteAddr.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), true
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// encodeStatus writes sm_status, the arguments of a callback.
func encodeStatus(w *xdr.Writer, monName string, state int32, priv [privSize]byte) {
	w.String(monName)
	w.Uint32(uint32(state))
	w.Fixed(priv[:])
}
