// Package clients is who may use an export and as whom: the client rules of exports(5)
// (hosts and networks, ro/rw, root_squash, all_squash, anonuid/anongid, secure ports) and
// the credential a call is served as once squashed.
//
// A rule list is matched as Linux's exportfs matches one: a client matching several
// specifications gets the first of, in this order, a single address, then a network
// (the first in the list that contains it), then the wildcard "*". Host names and
// netgroups are not supported: a rule names addresses, so nothing depends on a resolver
// while serving.
//
// Files: clients.go (Grant, Rule, Rules, Match, Map), parse.go (the exports(5) client
// syntax: "10.0.0.0/24(rw,no_root_squash)").
//
// Lock order: this package takes no locks; Rules are immutable values.
package clients

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Nobody is the default anonymous uid and gid (anonuid, anongid), as knfsd's.
const Nobody = 65534

// Squash is how a caller's identity is mapped.
type Squash uint8

const (
	// RootSquash maps uid 0 and gid 0 (also among the supplementary groups) to the
	// anonymous ids: exports(5)'s default.
	RootSquash Squash = iota
	// NoRootSquash serves every caller as who it says it is.
	NoRootSquash
	// AllSquash maps every caller to the anonymous ids, with no supplementary groups.
	AllSquash
)

func (s Squash) String() string {
	switch s {
	case NoRootSquash:
		return "no_root_squash"
	case AllSquash:
		return "all_squash"
	default:
		return "root_squash"
	}
}

// Grant is what one client may do on one export.
type Grant struct {
	ReadOnly bool
	Squash   Squash
	// AnonUID and AnonGID are whom squashed callers and calls without credentials
	// (AUTH_NONE) are served as.
	AnonUID, AnonGID uint32
	// Insecure admits calls from source ports of 1024 and more; a secure grant (the
	// default) only privileged ports, which only root can bind on a client.
	Insecure bool
}

// DefaultGrant is exports(5)'s default: ro, root_squash, secure, nobody.
func DefaultGrant() Grant {
	return Grant{ReadOnly: true, Squash: RootSquash, AnonUID: Nobody, AnonGID: Nobody}
}

// Identity is a caller as a call's credential names it.
type Identity struct {
	// Anonymous: the call carried no usable credential (AUTH_NONE).
	Anonymous bool
	UID, GID  uint32
	Groups    []uint32
}

// Map is the identity a call is served as: anonymous callers and squashed ones become
// the anonymous ids. The result is never anonymous: every call is then checked as some
// user. groups is not modified; a squashed list is a new slice.
func (g Grant) Map(id Identity) Identity {
	anon := Identity{UID: g.AnonUID, GID: g.AnonGID}
	switch {
	case id.Anonymous || g.Squash == AllSquash:
		return anon
	case g.Squash == NoRootSquash:
		return id
	}
	out := id
	if out.UID == 0 {
		out.UID = g.AnonUID
	}
	if out.GID == 0 {
		out.GID = g.AnonGID
	}
	if slices.Contains(id.Groups, 0) {
		out.Groups = slices.Clone(id.Groups)
		for i, gid := range out.Groups {
			if gid == 0 {
				out.Groups[i] = g.AnonGID
			}
		}
	}
	return out
}

// Hosts is the part of a rule that says whom it is for.
type Hosts struct {
	// Any: "*", every client.
	Any bool
	// Prefix: an address (a prefix of full length) or a network.
	Prefix netip.Prefix
}

// String is the rule's client as written in an exports file and listed by EXPORT.
func (c Hosts) String() string {
	switch {
	case c.Any:
		return "*"
	case c.Prefix.IsSingleIP():
		return c.Prefix.Addr().String()
	default:
		return c.Prefix.String()
	}
}

func (c Hosts) contains(a netip.Addr) bool {
	return c.Any || c.Prefix.Contains(a)
}

// Rule is one "clients(options)" element of an export.
type Rule struct {
	Hosts Hosts
	Grant Grant
}

// String is the rule as an exports file would say it.
func (r Rule) String() string {
	opts := []string{"rw"}
	if r.Grant.ReadOnly {
		opts[0] = "ro"
	}
	opts = append(opts, r.Grant.Squash.String())
	if r.Grant.Insecure {
		opts = append(opts, "insecure")
	}
	if r.Grant.AnonUID != Nobody {
		opts = append(opts, "anonuid="+strconv.FormatUint(uint64(r.Grant.AnonUID), 10))
	}
	if r.Grant.AnonGID != Nobody {
		opts = append(opts, "anongid="+strconv.FormatUint(uint64(r.Grant.AnonGID), 10))
	}
	return r.Hosts.String() + "(" + strings.Join(opts, ",") + ")"
}

// Rules are an export's rules in the order given.
type Rules []Rule

// Match is the grant of the client at addr: false when no rule admits it.
func (rs Rules) Match(addr netip.Addr) (Grant, bool) {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return Grant{}, false
	}
	// exportfs's precedence: single hosts, then networks, then the wildcard.
	for _, pass := range [...]func(Hosts) bool{
		func(c Hosts) bool { return !c.Any && c.Prefix.IsSingleIP() },
		func(c Hosts) bool { return !c.Any && !c.Prefix.IsSingleIP() },
		func(c Hosts) bool { return c.Any },
	} {
		for _, r := range rs {
			if pass(r.Hosts) && r.Hosts.contains(addr) {
				return r.Grant, true
			}
		}
	}
	return Grant{}, false
}

// AddrOf is the IP address of a caller's network address: invalid for one that has none.
func AddrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// PrivilegedPort reports whether a caller's address has a source port under 1024 (which
// only root can bind on most systems): a call of no TCP or UDP address is not.
func PrivilegedPort(a net.Addr) bool {
	var port int
	switch a := a.(type) {
	case *net.TCPAddr:
		port = a.Port
	case *net.UDPAddr:
		port = a.Port
	default:
		return false
	}
	return port > 0 && port < 1024
}

// Admits reports whether a call from addr may be served under g: a secure grant needs a
// privileged source port.
func (g Grant) Admits(addr net.Addr) bool { return g.Insecure || PrivilegedPort(addr) }

// Everyone is the rule of the single export the command-line flags serve: every client,
// read-write, as who it says it is (the union itself may be read-only), from any port
// unless secure.
func Everyone(secure bool) Rules {
	return Rules{{Hosts: Hosts{Any: true}, Grant: Grant{Squash: NoRootSquash, AnonUID: Nobody, AnonGID: Nobody, Insecure: !secure}}}
}
