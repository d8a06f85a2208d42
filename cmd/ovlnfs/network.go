package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/portmap"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// The sockets: NFSv3 and MOUNT over TCP at --listen, MOUNT over UDP on the same port, and
// how clients find them (--portmap): this process's portmapper, a registration with the
// system's rpcbind, or nothing.

// ephemeralTries bounds the draws of a port free for both TCP and UDP when port 0 asks
// for any.
const ephemeralTries = 20

// listenPair listens on addr over TCP and, with withUDP, over UDP on the same address and
// port. Port 0 draws a port free for both. The errors are one line for the user.
func listenPair(addr, role string, withUDP bool) (net.Listener, *net.UDPConn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %q is not HOST:PORT: %v", role, addr, err)
	}
	for try := 1; ; try++ {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, listenError(addr, "", err)
		}
		if !withUDP {
			return l, nil, nil
		}
		ta := l.Addr().(*net.TCPAddr)
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone})
		if err == nil {
			return l, pc, nil
		}
		l.Close()
		if port == "0" && errors.Is(err, syscall.EADDRINUSE) && try < ephemeralTries {
			continue
		}
		return nil, nil, listenError(net.JoinHostPort(ta.IP.String(), strconv.Itoa(ta.Port)), "UDP", err)
	}
}

func listenError(addr, transport string, err error) error {
	what := addr
	if transport != "" {
		what += " (" + transport + ")"
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("cannot listen on %s: address already in use", what)
	}
	return fmt.Errorf("cannot listen on %s: %v", what, unwrapOpError(err))
}

// probeAddr is where a system rpcbind answers if one runs in this network namespace.
var probeAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), portmap.Port)

// portmapper is how this run tells clients its ports, once started.
type portmapper struct {
	summary string // for the start line: "serve 127.0.0.1:111", "registered with rpcbind", "off (...)"
	// Serving: the portmapper and its sockets.
	pm *server.Portmapper
	l  net.Listener
	pc *net.UDPConn
	// Registered: the registrations to undo (the lock manager's is apart: another lock
	// manager registered with rpcbind keeps it from being made, and NFS still is).
	reg, lockReg *portmap.Registration
	// serving counts the portmapper's Serve goroutines.
	serving sync.WaitGroup
}

// startPortmap decides --portmap=auto and starts the portmapper or the registration.
// An error is a refusal (an explicit mode that cannot be had); in auto mode a failure is
// a warning and the server runs without.
func startPortmap(ctx context.Context, cfg *serveConfig, nfs net.Addr, services, lockServices []portmap.Service,
	logger *slog.Logger, failed chan<- error) (*portmapper, error) {
	mode := cfg.portmap
	nfsPort := nfs.(*net.TCPAddr).Port
	if mode == portmapAuto {
		switch {
		case nfsPort != nfsPortStandard:
			return &portmapper{summary: "off (NFS is not on port 2049; --portmap=serve or register asks for one)"}, nil
		case portmap.Probe(ctx, probeAddr):
			mode = portmapRegister
		case os.Geteuid() != 0:
			return &portmapper{summary: "off (not root, and no rpcbind answers on 127.0.0.1:111)"}, nil
		default:
			mode = portmapServe
		}
	}
	soft := func(err error) (*portmapper, error) {
		if cfg.portmap != portmapAuto {
			return nil, err
		}
		logger.Warn("no portmapper: clients must give port= and mountport=", "err", err)
		return &portmapper{summary: "off (" + err.Error() + ")"}, nil
	}
	switch mode {
	case portmapOff:
		return &portmapper{summary: "off"}, nil
	case portmapRegister:
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		reg, err := portmap.Register(rctx, portmap.RegisterConfig{Services: services, Check: probeAddr,
			Logger: logger.With("component", "portmap")})
		if err != nil {
			return soft(fmt.Errorf("cannot register with rpcbind: %v", err))
		}
		p := &portmapper{summary: "registered with rpcbind (" + portmap.DefaultSocket + ")", reg: reg}
		if len(lockServices) > 0 {
			p.lockReg = registerLocks(rctx, lockServices, logger)
		}
		return p, nil
	}
	addr := cfg.portmapListen
	if addr == "" {
		host, _, _ := net.SplitHostPort(cfg.listen)
		addr = net.JoinHostPort(host, strconv.Itoa(portmap.Port))
	}
	l, pc, err := listenPair(addr, "--portmap-listen", true)
	if err != nil {
		return soft(fmt.Errorf("portmapper: %v", err))
	}
	pm, err := server.NewPortmapper(server.PortmapperConfig{Services: append(services, lockServices...), TCP: l.Addr(), UDP: pc.LocalAddr(), Logger: logger})
	if err != nil {
		l.Close()
		pc.Close()
		return nil, err
	}
	p := &portmapper{summary: "serve " + l.Addr().String(), pm: pm, l: l, pc: pc}
	p.serving.Go(func() {
		if err := pm.Serve(l); err != nil {
			failed <- fmt.Errorf("portmapper over TCP: %w", err)
		}
	})
	p.serving.Go(func() {
		if err := pm.ServeUDP(pc); err != nil {
			failed <- fmt.Errorf("portmapper over UDP: %w", err)
		}
	})
	return p, nil
}

// stop undoes start: the registration goes first, so that no client is sent here once
// the server stops answering.
func (p *portmapper) stop(ctx context.Context, logger *slog.Logger) {
	if p.lockReg != nil {
		if err := p.lockReg.Unregister(ctx); err != nil {
			logger.Error("unregistering the lock manager from rpcbind", "err", err)
		}
	}
	if p.reg != nil {
		if err := p.reg.Unregister(ctx); err != nil {
			logger.Error("unregistering from rpcbind", "err", err)
		}
	}
	if p.pm != nil {
		p.l.Close()
		if err := p.pm.Shutdown(ctx); err != nil {
			logger.Error("portmapper shutdown incomplete", "err", err)
		}
		p.pc.Close()
		p.serving.Wait()
	}
}

// registerLocks registers the lock manager with rpcbind: NLM and NSM, or NLM alone when
// a status monitor (rpc.statd) is registered already, or nothing when another lock
// manager (the kernel's lockd) is. What was done is logged; a failure is a warning: NFS
// serves, and clients mount with nolock.
func registerLocks(ctx context.Context, services []portmap.Service, logger *slog.Logger) *portmap.Registration {
	rcfg := portmap.RegisterConfig{Services: services, Check: probeAddr, Logger: logger.With("component", "portmap")}
	reg, err := portmap.Register(ctx, rcfg)
	if err == nil {
		logger.Info("registered the lock manager (NLM and NSM) with rpcbind")
		return reg
	}
	var nlmOnly []portmap.Service
	for _, s := range services {
		if s.Program != nsm.ProgramNumber {
			nlmOnly = append(nlmOnly, s)
		}
	}
	rcfg.Services = nlmOnly
	if reg, err2 := portmap.Register(ctx, rcfg); err2 == nil {
		logger.Warn("registered NLM but not NSM with rpcbind: a status monitor (rpc.statd) is registered; clients' reboot notices go to it, not here, and a rebooted client's locks stay until it unlocks them", "err", err)
		return reg
	}
	logger.Warn("the lock manager is not registered with rpcbind (another lock manager is): clients mount with nolock", "err", err)
	return nil
}
