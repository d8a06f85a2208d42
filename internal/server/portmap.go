package server

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
)

// PortmapperConfig is what the portmapper lists and where it answers.
type PortmapperConfig struct {
	// Services are the export server's (Services).
	Services []portmap.Service
	// TCP and UDP are the portmapper's own addresses (UDP may be nil), listed too.
	TCP, UDP net.Addr
	Logger   *slog.Logger
}

// Portmapper is this process's portmapper, for when no system rpcbind runs.
type Portmapper struct {
	rpc *oncrpc.Server
}

// NewPortmapper builds the portmapper.
func NewPortmapper(cfg PortmapperConfig) (*Portmapper, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	addrs := []net.Addr{cfg.TCP}
	if cfg.UDP != nil {
		addrs = append(addrs, cfg.UDP)
	}
	self, err := portmap.Self(addrs...)
	if err != nil {
		return nil, err
	}
	pm, err := portmap.New(portmap.Config{Services: append(self, cfg.Services...), Logger: logger.With("component", "portmap")})
	if err != nil {
		return nil, err
	}
	rpc, err := oncrpc.New(oncrpc.Config{Programs: pm.Programs(), Logger: logger})
	if err != nil {
		return nil, err
	}
	return &Portmapper{rpc: rpc}, nil
}

// Serve answers over TCP on l until l is closed (it then returns nil).
func (p *Portmapper) Serve(l net.Listener) error {
	err := p.rpc.Serve(l)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ServeUDP answers over UDP on pc until pc is closed or Shutdown (it then returns nil).
func (p *Portmapper) ServeUDP(pc *net.UDPConn) error {
	err := p.rpc.ServeUDP(pc)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown finishes the calls already read (bounded by ctx); close the listener first and
// the UDP socket after.
func (p *Portmapper) Shutdown(ctx context.Context) error { return p.rpc.Shutdown(ctx) }
