package nsm

import (
	"context"
	"slices"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// unmon is SM_UNMON: the monitor requests of mon_name for my_id are withdrawn. Only a
// loopback caller changes anything; the reply is the state number either way.
func (m *Monitor) unmon(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	id := decodeMonID(call.Args)
	if err := done(call.Args); err != nil {
		return err
	}
	if fromLoopback(call) {
		m.dropWatches(func(w watch) bool {
			return w.monName == string(id.monName) && w.prog == id.my.prog && w.vers == id.my.vers && w.proc == id.my.proc
		})
	}
	reply.Uint32(uint32(m.state))
	return nil
}

// unmonAll is SM_UNMON_ALL: every monitor request for my_id is withdrawn.
func (m *Monitor) unmonAll(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	id := decodeMyID(call.Args)
	if err := done(call.Args); err != nil {
		return err
	}
	if fromLoopback(call) {
		m.dropWatches(func(w watch) bool { return w.prog == id.prog && w.vers == id.vers && w.proc == id.proc })
	}
	reply.Uint32(uint32(m.state))
	return nil
}

func (m *Monitor) dropWatches(match func(watch) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watches = slices.DeleteFunc(m.watches, match)
}
