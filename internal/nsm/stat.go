package nsm

import (
	"context"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// stat is SM_STAT: whether a host could be monitored (any name can: no name is resolved
// here) and this monitor's state number.
func (m *Monitor) stat(_ context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	name(call.Args)
	if err := done(call.Args); err != nil {
		return err
	}
	reply.Uint32(statSucc)
	reply.Uint32(uint32(m.state))
	return nil
}
