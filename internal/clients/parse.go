package clients

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseRule reads one client element of an exports(5) line: "*", an address or a
// network, optionally followed by options in parentheses with no space before them:
// "10.0.0.0/24(rw,no_root_squash)". Options not given take DefaultGrant's values. The
// error says what is wrong with the element.
func ParseRule(s string) (Rule, error) {
	spec, opts, hasOpts := strings.Cut(s, "(")
	if hasOpts {
		if !strings.HasSuffix(opts, ")") {
			return Rule{}, fmt.Errorf("%q: the options must end with ')'", s)
		}
		opts = strings.TrimSuffix(opts, ")")
	}
	var r Rule
	var err error
	if r.Hosts, err = parseClients(spec); err != nil {
		return Rule{}, fmt.Errorf("%q: %w", s, err)
	}
	if r.Grant, err = parseOptions(opts); err != nil {
		return Rule{}, fmt.Errorf("%q: %w", s, err)
	}
	return r, nil
}

func parseClients(spec string) (Hosts, error) {
	switch {
	case spec == "":
		return Hosts{}, errors.New("no client before the options (give *, an address or a network)")
	case spec == "*":
		return Hosts{Any: true}, nil
	case strings.Contains(spec, "/"):
		p, err := netip.ParsePrefix(spec)
		if err != nil {
			return Hosts{}, fmt.Errorf("not a network (ADDRESS/BITS): %v", err)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return Hosts{Prefix: p.Masked()}, nil
	}
	a, err := netip.ParseAddr(spec)
	if err != nil {
		if strings.ContainsAny(spec, "@?") || strings.Contains(spec, "*") {
			return Hosts{}, errors.New("netgroups and host name wildcards are not supported: give *, an address or a network")
		}
		return Hosts{}, errors.New("host names are not supported: give *, an address or a network (ADDRESS/BITS)")
	}
	a = a.Unmap()
	return Hosts{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
}

func parseOptions(opts string) (Grant, error) {
	g := DefaultGrant()
	if opts == "" {
		return g, nil
	}
	seen := map[string]string{}
	for _, opt := range strings.Split(opts, ",") {
		key, value, hasValue := strings.Cut(opt, "=")
		// Options that contradict each other are refused, not resolved by order.
		group := key
		switch key {
		case "ro", "rw":
			group = "ro/rw"
		case "root_squash", "no_root_squash", "all_squash", "no_all_squash":
			group = "squash"
		case "secure", "insecure":
			group = "secure/insecure"
		}
		if prev, ok := seen[group]; ok && prev != opt {
			return g, fmt.Errorf("%s and %s contradict each other", prev, opt)
		}
		seen[group] = opt
		if hasValue != (key == "anonuid" || key == "anongid") {
			if hasValue {
				return g, fmt.Errorf("option %s takes no value", key)
			}
			return g, fmt.Errorf("option %s needs a value (%s=N)", key, key)
		}
		switch key {
		case "ro":
			g.ReadOnly = true
		case "rw":
			g.ReadOnly = false
		case "root_squash", "no_all_squash":
			g.Squash = RootSquash
		case "no_root_squash":
			g.Squash = NoRootSquash
		case "all_squash":
			g.Squash = AllSquash
		case "secure":
			g.Insecure = false
		case "insecure":
			g.Insecure = true
		case "anonuid", "anongid":
			n, err := strconv.ParseUint(value, 10, 32)
			if err != nil || n == 1<<32-1 {
				return g, fmt.Errorf("%s=%s: must be a number from 0 to 4294967294", key, value)
			}
			if key == "anonuid" {
				g.AnonUID = uint32(n)
			} else {
				g.AnonGID = uint32(n)
			}
		case "sync", "no_subtree_check", "subtree_check", "wdelay", "no_wdelay":
			// What these choose is fixed in ovlnfs: every write acknowledged stable is on
			// disk, and handles do not depend on paths.
		case "":
			return g, errors.New("an empty option")
		default:
			return g, fmt.Errorf("option %q is not supported (supported: ro, rw, root_squash, no_root_squash, all_squash, no_all_squash, anonuid=N, anongid=N, secure, insecure, sync, no_subtree_check)", key)
		}
	}
	return g, nil
}
