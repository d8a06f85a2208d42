package nsm

import (
	"context"
	"net/netip"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// callTimeout bounds one call to another status monitor or a lock manager, the
// portmapper lookup included.
const callTimeout = 5 * time.Second

// notify is SM_NOTIFY: the host named mon_name, which sent this from its address, has
// rebooted with a new state. The lock manager drops what it held (Config.Rebooted) and
// the local lock managers that asked to know are called back. The reply is empty.
func (m *Monitor) notify(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	sc := decodeStatChange(call.Args)
	if err := done(call.Args); err != nil {
		return err
	}
	sender, _ := callerAddr(call)
	monName := string(sc.monName)
	if m.ownNotice(monName, sc.state) {
		// A peer at one of this server's own addresses, whose portmapper is this
		// process's: the notice came back here. It says nothing of a reboot.
		m.logger.Debug("SM_NOTIFY of this server's own restart, ignored", "mon_name", monName, "sender", sender.String())
		return nil
	}
	m.logger.Info("a host says it rebooted (SM_NOTIFY)", "mon_name", monName, "sender", sender.String(), "state", sc.state)
	m.cfg.Rebooted(sender, monName, sc.state)
	m.mu.Lock()
	var calls []watch
	for _, w := range m.watches {
		if w.monName == monName || (w.monAddr.IsValid() && w.monAddr == sender) {
			calls = append(calls, w)
		}
	}
	m.mu.Unlock()
	for _, w := range calls {
		m.running.Go(func() { m.callBack(w, sc.state) })
	}
	return nil
}

// callBack tells a local lock manager that a host it asked about rebooted (sm_status,
// to its my_prog, my_vers, my_proc over UDP on loopback).
func (m *Monitor) callBack(w watch, state int32) {
	ctx, cancel := context.WithTimeout(m.ctx, callTimeout)
	defer cancel()
	c, err := portmap.DialService(ctx, netip.AddrFrom4([4]byte{127, 0, 0, 1}), m.cfg.PortmapPort, w.prog, w.vers, "udp", netip.Addr{})
	if err == nil {
		defer c.Close()
		var args xdr.Writer
		encodeStatus(&args, w.monName, state, w.priv)
		_, err = oncrpc.Invoke(ctx, c, w.prog, w.vers, w.proc, args.Buf)
	}
	if err != nil {
		m.logger.Warn("could not tell a local lock manager of a reboot", "mon_name", w.monName, "prog", w.prog, "vers", w.vers, "proc", w.proc, "err", err)
	}
}
