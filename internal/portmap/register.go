package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Registering with the system's rpcbind, when one runs, instead of answering port 111
// here. rpcbind takes SET and UNSET only through its Unix socket (it then knows the
// caller's uid and records it as the owner), so that is where they go; rpcbind's own
// lookups (GETADDR) answer for the transport a call came on, so what is registered is
// read back with DUMP, which lists every netid.

// DefaultSocket is where rpcbind takes registrations.
const DefaultSocket = "/run/rpcbind.sock"

// callTimeout bounds one call to rpcbind or to a service it names.
const callTimeout = 3 * time.Second

// RegisterConfig is what to register and where.
type RegisterConfig struct {
	Services []Service
	// Socket is rpcbind's Unix socket; "" is DefaultSocket.
	Socket string
	// Check, when valid, is where the same rpcbind answers over TCP (127.0.0.1:111):
	// after registering, the mappings are read back there, which catches a socket that
	// belongs to an rpcbind of another network namespace.
	Check  netip.AddrPort
	Logger *slog.Logger
}

// Registration is services registered with rpcbind; Unregister removes them.
type Registration struct {
	cfg RegisterConfig
	// set is what this registration holds.
	set []Service
}

// Register makes rpcbind map each service. A mapping rpcbind already holds for a
// service's program, version and netid at another address is taken over only when
// nothing answers there (a server that died without unregistering); one that answers is
// another server's, and Register fails and leaves rpcbind as it found it.
func Register(ctx context.Context, cfg RegisterConfig) (*Registration, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registration{cfg: cfg}
	c, err := r.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	fail := func(err error) (*Registration, error) {
		if uerr := r.unsetAll(ctx, c); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return nil, err
	}
	for _, s := range cfg.Services {
		ok, err := rpcbSet(ctx, c, s)
		if err != nil {
			return fail(err)
		}
		if !ok {
			if err := r.takeOver(ctx, c, s); err != nil {
				return fail(err)
			}
		}
		r.set = append(r.set, s)
	}
	if cfg.Check.IsValid() {
		if err := r.check(ctx); err != nil {
			return fail(err)
		}
	}
	cfg.Logger.Info("registered with rpcbind", "socket", cfg.Socket, "services", len(r.set))
	return r, nil
}

// Services are what the registration holds.
func (r *Registration) Services() []Service { return slices.Clone(r.set) }

// Unregister removes the mappings Register made, those still naming this process's
// addresses (another server that has since taken one over keeps it).
func (r *Registration) Unregister(ctx context.Context) error {
	if len(r.set) == 0 {
		return nil
	}
	c, err := r.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := r.unsetAll(ctx, c); err != nil {
		return err
	}
	r.cfg.Logger.Info("unregistered from rpcbind", "socket", r.cfg.Socket)
	return nil
}

func (r *Registration) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", r.cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("rpcbind at %s: %w", r.cfg.Socket, err)
	}
	return c, nil
}

// takeOver handles a SET rpcbind refused: the program version and netid are mapped to
// another address.
func (r *Registration) takeOver(ctx context.Context, c net.Conn, s Service) error {
	held, err := dumpRPCB(ctx, c)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(held, func(b rpcb) bool { return b.prog == s.Program && b.vers == s.Version && b.netid == s.Netid })
	if i < 0 {
		return fmt.Errorf("rpcbind at %s refused to map %v (and holds no other mapping of it)", r.cfg.Socket, s)
	}
	other := held[i]
	if !overlaps(other, s) && answers(ctx, other.netid, other.addr, s.Program, s.Version) {
		return fmt.Errorf("rpcbind at %s maps program %d version %d on %s to %s (owner %s), where a server answers: stop that server, or run ovlnfs with --portmap=off",
			r.cfg.Socket, s.Program, s.Version, s.Netid, other.addr, other.owner)
	}
	r.cfg.Logger.Warn("replacing a stale rpcbind mapping (nothing answers there)", "service", s.String(), "stale_addr", other.addr, "owner", other.owner)
	if ok, err := rpcbUnset(ctx, c, s); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("rpcbind at %s refused to remove the stale mapping of %v to %s (owner %s)", r.cfg.Socket, s, other.addr, other.owner)
	}
	ok, err := rpcbSet(ctx, c, s)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("rpcbind at %s refused to map %v", r.cfg.Socket, s)
	}
	return nil
}

// unsetAll removes this registration's mappings that still name its addresses.
func (r *Registration) unsetAll(ctx context.Context, c net.Conn) error {
	if len(r.set) == 0 {
		return nil
	}
	held, err := dumpRPCB(ctx, c)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range r.set {
		uaddr := FormatUaddr(s.Addr)
		if !slices.ContainsFunc(held, func(b rpcb) bool {
			return b.prog == s.Program && b.vers == s.Version && b.netid == s.Netid && b.addr == uaddr
		}) {
			continue
		}
		if ok, err := rpcbUnset(ctx, c, s); err != nil {
			errs = append(errs, err)
		} else if !ok {
			errs = append(errs, fmt.Errorf("rpcbind at %s refused to remove %v", r.cfg.Socket, s))
		}
	}
	r.set = nil
	return errors.Join(errs...)
}

// check reads the mappings back from where clients ask.
func (r *Registration) check(ctx context.Context) error {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", r.cfg.Check.String())
	if err != nil {
		return fmt.Errorf("rpcbind at %s: %w", r.cfg.Check, err)
	}
	defer c.Close()
	held, err := dumpRPCB(ctx, c)
	if err != nil {
		return err
	}
	for _, s := range r.set {
		uaddr := FormatUaddr(s.Addr)
		if !slices.ContainsFunc(held, func(b rpcb) bool {
			return b.prog == s.Program && b.vers == s.Version && b.netid == s.Netid && b.addr == uaddr
		}) {
			return fmt.Errorf("registered %v through %s, but the portmapper at %s does not list it: the socket belongs to another rpcbind (another network namespace?)",
				s, r.cfg.Socket, r.cfg.Check)
		}
	}
	return nil
}

// rpcbCall makes one rpcbind call, v4 first, v3 if that version is not offered.
func rpcbCall(ctx context.Context, c net.Conn, proc Proc, args []byte) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := oncrpc.Invoke(cctx, c, ProgramNumber, VersionRPCB4, uint32(proc), args)
	var re *oncrpc.ReplyError
	if errors.As(err, &re) && re.Outcome == oncrpc.ProgMismatch.String() {
		res, err = oncrpc.Invoke(cctx, c, ProgramNumber, VersionRPCB3, uint32(proc), args)
	}
	return res, err
}

func rpcbSet(ctx context.Context, c net.Conn, s Service) (bool, error) {
	return rpcbChange(ctx, c, ProcSet, s, FormatUaddr(s.Addr))
}

func rpcbUnset(ctx context.Context, c net.Conn, s Service) (bool, error) {
	return rpcbChange(ctx, c, ProcUnset, s, "")
}

func rpcbChange(ctx context.Context, c net.Conn, proc Proc, s Service, uaddr string) (bool, error) {
	var w xdr.Writer
	// rpcbind records the caller's uid as the owner, whatever is sent.
	rpcb{prog: s.Program, vers: s.Version, netid: s.Netid, addr: uaddr, owner: ownOwner}.encode(&w)
	res, err := rpcbCall(ctx, c, proc, w.Buf)
	if err != nil {
		return false, fmt.Errorf("rpcbind %v: %w", s, err)
	}
	r := xdr.NewReader(res, 0)
	ok := r.Bool()
	if r.Err() != nil {
		return false, fmt.Errorf("rpcbind %v: reply does not decode", s)
	}
	return ok, nil
}

// maxDumpEntries bounds what is read of another rpcbind's list.
const maxDumpEntries = 4096

// dumpRPCB reads rpcbind's whole list.
func dumpRPCB(ctx context.Context, c net.Conn) ([]rpcb, error) {
	res, err := rpcbCall(ctx, c, ProcDump, nil)
	if err != nil {
		return nil, fmt.Errorf("rpcbind DUMP: %w", err)
	}
	return decodeDump(res)
}

// decodeDump reads the rpcblist of a DUMP reply.
func decodeDump(res []byte) ([]rpcb, error) {
	r := xdr.NewReader(res, 0)
	var out []rpcb
	for r.Bool() {
		var b rpcb
		b.prog, b.vers = r.Uint32(), r.Uint32()
		b.netid = string(r.OpaqueMax(maxString, errLongString))
		b.addr = string(r.OpaqueMax(maxString, errLongString))
		b.owner = string(r.OpaqueMax(maxString, errLongString))
		if r.Err() != nil || len(out) >= maxDumpEntries {
			break
		}
		out = append(out, b)
	}
	if r.Err() != nil || len(out) >= maxDumpEntries {
		return nil, errors.New("rpcbind DUMP: reply does not decode")
	}
	return out, nil
}

// overlaps reports whether a mapping names a port this process holds: the service's
// port, on its address or where the two overlap (either is a wildcard). No other server
// can listen there, so the mapping is a dead server's even if a call there is answered
// (by this process).
func overlaps(b rpcb, s Service) bool {
	ap, err := ParseUaddr(b.netid, b.addr)
	if err != nil || ap.Port() != s.Addr.Port() {
		return false
	}
	ip, ours := ap.Addr(), s.Addr.Addr()
	return ip == ours || ip.IsUnspecified() || ours.IsUnspecified()
}

// answers reports whether a server answers a NULL call of a program version at a
// universal address (an RPC refusal is an answer too: something lives there).
func answers(ctx context.Context, netid, uaddr string, prog, vers uint32) bool {
	ap, err := ParseUaddr(netid, uaddr)
	if err != nil {
		return false
	}
	ip := ap.Addr()
	if ip.IsUnspecified() {
		ip = netip.IPv6Loopback()
		if ap.Addr().Is4() {
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
	}
	target := netip.AddrPortFrom(ip, ap.Port()).String()
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var d net.Dialer
	var c net.Conn
	switch netid {
	case NetidTCP, NetidTCP6:
		c, err = d.DialContext(cctx, "tcp", target)
	default:
		c, err = d.DialContext(cctx, "udp", target)
	}
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = oncrpc.Invoke(cctx, c, prog, vers, 0, nil)
	var re *oncrpc.ReplyError
	return err == nil || errors.As(err, &re)
}

// Probe reports whether a portmapper answers at addr over TCP (a NULL call of PMAP v2).
func Probe(ctx context.Context, addr netip.AddrPort) bool {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(cctx, "tcp", addr.String())
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = oncrpc.Invoke(cctx, c, ProgramNumber, VersionPMAP, uint32(ProcNull), nil)
	return err == nil
}
