package mount_test

import (
	"reflect"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

func TestExportAndDump(t *testing.T) {
	s := rpctest.StartServer(t, rpctest.Options{})
	c := rpctest.Dial(t, s.Addr)

	if exports := c.Export(); !reflect.DeepEqual(exports, []string{"/"}) {
		t.Errorf("EXPORT = %q, want [/]", exports)
	}
	if got := c.Dump(); len(got) != 0 {
		t.Errorf("DUMP before any MNT = %q", got)
	}
	c.MountRoot()
	if got, want := c.Dump(), []string{"127.0.0.1:/"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DUMP after MNT = %q, want %q", got, want)
	}
	c.Umnt("/")
	if got := c.Dump(); len(got) != 0 {
		t.Errorf("DUMP after UMNT = %q", got)
	}
	c.MountRoot()
	c.UmntAll()
	if got := c.Dump(); len(got) != 0 {
		t.Errorf("DUMP after UMNTALL = %q", got)
	}
}
