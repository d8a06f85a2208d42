package clients

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mustRules(t *testing.T, specs ...string) Rules {
	t.Helper()
	var rs Rules
	for _, s := range specs {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatalf("ParseRule(%q): %v", s, err)
		}
		rs = append(rs, r)
	}
	return rs
}

func TestMatchPrecedence(t *testing.T) {
	// Written wildcard first and network before host: the host still wins for its
	// address, the network for the rest of it, the wildcard for everyone else.
	rs := mustRules(t, "*(ro)", "10.0.0.0/8(rw)", "10.1.0.0/16(ro,all_squash)", "10.1.2.3(rw,no_root_squash)")
	for addr, want := range map[string]string{
		"10.1.2.3":  "10.1.2.3(rw,no_root_squash)",
		"10.1.2.4":  "10.0.0.0/8(rw,root_squash)", // the first network in the list that holds it
		"10.9.9.9":  "10.0.0.0/8(rw,root_squash)",
		"192.0.2.1": "*(ro,root_squash)",
	} {
		g, ok := rs.Match(netip.MustParseAddr(addr))
		if !ok {
			t.Fatalf("%s: no match", addr)
		}
		var got Rule
		for _, r := range rs {
			if r.Grant == g && r.Hosts.contains(netip.MustParseAddr(addr)) {
				got = r
				break
			}
		}
		if got.String() != want {
			t.Errorf("%s matched %s, want %s", addr, got, want)
		}
	}
	if _, ok := mustRules(t, "127.0.0.1(rw)").Match(netip.MustParseAddr("127.0.0.2")); ok {
		t.Error("127.0.0.2 admitted by a rule for 127.0.0.1")
	}
	if _, ok := mustRules(t, "127.0.0.1(rw)").Match(netip.MustParseAddr("::ffff:127.0.0.1")); !ok {
		t.Error("an IPv4-mapped address is not its IPv4 address")
	}
	if _, ok := (Rules{}).Match(netip.MustParseAddr("127.0.0.1")); ok {
		t.Error("an empty rule list admits a client")
	}
	if _, ok := mustRules(t, "*").Match(netip.Addr{}); ok {
		t.Error("a call without an address is admitted")
	}
}

func TestParseRuleDefaultsAndOptions(t *testing.T) {
	r := mustRules(t, "192.0.2.0/24")[0]
	if r.Grant != DefaultGrant() {
		t.Errorf("no options: %+v, want exports(5)'s defaults %+v", r.Grant, DefaultGrant())
	}
	r = mustRules(t, "192.0.2.7/24(rw,insecure,all_squash,anonuid=1000,anongid=100,sync,no_subtree_check)")[0]
	want := Grant{ReadOnly: false, Squash: AllSquash, AnonUID: 1000, AnonGID: 100, Insecure: true}
	if r.Grant != want || r.Hosts.String() != "192.0.2.0/24" {
		t.Errorf("got %v %+v, want 192.0.2.0/24 %+v", r.Hosts, r.Grant, want)
	}
	for spec, wantErr := range map[string]string{
		"host.example(rw)":             "host names are not supported",
		"@team(rw)":                    "netgroups",
		"*.example(rw)":                "netgroups",
		"10.0.0.0/33(rw)":              "not a network",
		"10.0.0.1(rw":                  "must end with ')'",
		"(rw)":                         "no client",
		"*(rw,ro)":                     "contradict",
		"*(no_root_squash,all_squash)": "contradict",
		"*(async)":                     "not supported",
		"*(anonuid)":                   "needs a value",
		"*(rw=1)":                      "takes no value",
		"*(anonuid=-1)":                "must be a number",
		"*(anongid=4294967295)":        "must be a number",
		"*(rw,,ro)":                    "empty option",
	} {
		_, err := ParseRule(spec)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseRule(%q) = %v, want an error saying %q", spec, err, wantErr)
		}
	}
}

func TestMap(t *testing.T) {
	root := Identity{UID: 0, GID: 0, Groups: []uint32{0, 10, 0}}
	user := Identity{UID: 1000, GID: 1000, Groups: []uint32{10}}
	anon := Identity{Anonymous: true, UID: 5, GID: 5}
	rs := DefaultGrant()
	got := rs.Map(root)
	if got.UID != Nobody || got.GID != Nobody || !slices.Equal(got.Groups, []uint32{Nobody, 10, Nobody}) {
		t.Errorf("root_squash of root: %+v", got)
	}
	if !slices.Equal(root.Groups, []uint32{0, 10, 0}) {
		t.Errorf("Map changed the caller's group list: %v", root.Groups)
	}
	if got := rs.Map(user); got.UID != 1000 || got.GID != 1000 || !slices.Equal(got.Groups, []uint32{10}) {
		t.Errorf("root_squash of a user: %+v", got)
	}
	if got := rs.Map(anon); got.Anonymous || got.UID != Nobody || got.GID != Nobody {
		t.Errorf("AUTH_NONE: %+v, want nobody, checked", got)
	}
	keep := Grant{Squash: NoRootSquash, AnonUID: 7, AnonGID: 8}
	if got := keep.Map(root); got.UID != 0 || got.GID != 0 {
		t.Errorf("no_root_squash of root: %+v", got)
	}
	if got := keep.Map(anon); got.UID != 7 || got.GID != 8 || got.Anonymous {
		t.Errorf("no_root_squash, AUTH_NONE: %+v, want anonuid/anongid", got)
	}
	all := Grant{Squash: AllSquash, AnonUID: 7, AnonGID: 8}
	if got := all.Map(user); got.UID != 7 || got.GID != 8 || len(got.Groups) != 0 {
		t.Errorf("all_squash of a user: %+v", got)
	}
}

func TestAdmits(t *testing.T) {
	secure := DefaultGrant()
	if secure.Admits(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}) {
		t.Error("a secure grant admits an unprivileged port")
	}
	if !secure.Admits(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 800}) {
		t.Error("a secure grant refuses a privileged port")
	}
	insecure := Grant{Insecure: true}
	if !insecure.Admits(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}) {
		t.Error("an insecure grant refuses an unprivileged port")
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"*", "10.0.0.0/8(rw)", "::1(ro,insecure)", "1.2.3.4(anonuid=5)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		// What parses prints as a rule that parses to the same.
		again, err := ParseRule(r.String())
		if err != nil || again != r {
			t.Fatalf("%q -> %q -> %v, %v", s, r.String(), again, err)
		}
	})
}
