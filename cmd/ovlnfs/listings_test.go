package main

import (
	"runtime/debug"
	"testing"
)

// DataForVerifier hands go-nfs the union's shared snapshot because go-nfs v0.0.4 only reads
// it. Another go-nfs version may sort or otherwise write what it gets: whoever upgrades must
// read getDirListingWithVerifier again (and copy in DataForVerifier if it writes), then
// update the version here.
func TestGoNFSVersionReviewedForSharedListings(t *testing.T) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build info in the test binary")
	}
	for _, m := range info.Deps {
		if m.Path == "github.com/willscott/go-nfs" {
			v := m.Version
			if m.Replace != nil {
				v = m.Replace.Version
			}
			if v != "v0.0.4" {
				t.Fatalf("go-nfs is %s: check that it never writes the slice DataForVerifier returns (listings.go)", v)
			}
			return
		}
	}
	t.Fatal("go-nfs not among the dependencies")
}
