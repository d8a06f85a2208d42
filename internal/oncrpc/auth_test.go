package oncrpc

import (
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// TestParseCredential: a well-formed AUTH_UNIX body gives its ids, AUTH_NONE is nobody,
// and a body that does not decode within the protocol's bounds is bad.
func TestParseCredential(t *testing.T) {
	good := AuthUnixBody("test", 1000, 100, 4, 27)
	c, bad := ParseCredential(AuthUnix, good)
	if bad || !c.Unix || c.UID != 1000 || c.GID != 100 || len(c.Groups) != 2 || c.Groups[1] != 27 {
		t.Errorf("good AUTH_UNIX: %+v bad=%v", c, bad)
	}
	if c, bad := ParseCredential(AuthNone, nil); bad || c.Unix || c.UID != Nobody {
		t.Errorf("AUTH_NONE: %+v bad=%v, want nobody", c, bad)
	}
	tooManyGroups := AuthUnixBody("test", 1, 1, make([]uint32, 17)...)
	var longName xdr.Writer
	longName.Uint32(0)
	longName.Opaque(make([]byte, 256))
	longName.Fixed(make([]byte, 12))
	for name, body := range map[string][]byte{
		"truncated":         good[:len(good)-3],
		"trailing bytes":    append(append([]byte(nil), good...), 0, 0, 0, 0),
		"17 groups":         tooManyGroups,
		"long machine name": longName.Buf,
		"empty":             nil,
	} {
		if _, bad := ParseCredential(AuthUnix, body); !bad {
			t.Errorf("%s: accepted", name)
		}
	}
}
