package nsm

import (
	"context"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// notifyAtOnce bounds the notices under way at once.
const notifyAtOnce = 16

// NotifyRestart starts telling each peer of the previous run that this server restarted
// (SM_NOTIFY, to the status monitor its portmapper names, over UDP, from the address
// the peer used; mon_name is that address, the name the peer knows this server by). A
// peer that cannot be reached is tried again, less and less often, for Config.NotifyFor.
// It returns at once; Close stops what is still trying.
func (m *Monitor) NotifyRestart() {
	peers := m.Previous()
	if len(peers) == 0 {
		return
	}
	m.logger.Info("telling the previous run's clients of the restart", "peers", len(peers), "state", m.state)
	slots := make(chan struct{}, notifyAtOnce)
	deadline := time.Now().Add(m.cfg.NotifyFor)
	for _, p := range peers {
		m.running.Go(func() {
			wait := time.Second
			for attempt := 1; ; attempt++ {
				select {
				case slots <- struct{}{}:
				case <-m.ctx.Done():
					return
				}
				err := m.notifyPeer(p)
				<-slots
				if err == nil {
					m.logger.Info("told a client of the restart", "peer", p.Addr.String(), "name", p.Name, "attempt", attempt)
					return
				}
				if time.Now().Add(wait).After(deadline) {
					m.logger.Warn("gave up telling a client of the restart: its locks are lost without its knowing",
						"peer", p.Addr.String(), "name", p.Name, "attempts", attempt, "err", err)
					return
				}
				m.logger.Debug("could not tell a client of the restart; trying again", "peer", p.Addr.String(), "in", wait, "err", err)
				select {
				case <-time.After(wait):
				case <-m.ctx.Done():
					return
				}
				wait = min(2*wait, 30*time.Second)
			}
		})
	}
}

func (m *Monitor) notifyPeer(p Peer) error {
	ctx, cancel := context.WithTimeout(m.ctx, callTimeout)
	defer cancel()
	c, err := portmap.DialService(ctx, p.Addr, m.cfg.PortmapPort, ProgramNumber, Version, "udp", p.Server)
	if err != nil {
		return err
	}
	defer c.Close()
	var args xdr.Writer
	m.mu.Lock()
	m.sent[p.Server.String()] = true
	m.mu.Unlock()
	statChange{monName: []byte(p.Server.String()), state: m.state}.encode(&args)
	_, err = oncrpc.Invoke(ctx, c, ProgramNumber, Version, uint32(ProcNotify), args.Buf)
	return err
}

// ownNotice reports whether an SM_NOTIFY is one this monitor sent: this run's state
// number, naming an address of this server it told a peer.
func (m *Monitor) ownNotice(monName string, state int32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return state == m.state && m.sent[monName]
}
