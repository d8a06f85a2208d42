package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// BenchmarkToolchainPattern is what a compiler does to a tree of headers over NFS, once
// per file: LOOKUP the name (the client has the directories' handles already), ACCESS
// before the open, READ the whole file. One op is one file. The profile of this benchmark
// is the profile of the metadata-heavy path:
//
//	go test -run '^$' -bench ToolchainPattern -cpuprofile /tmp/tc.prof ./internal/server/
func BenchmarkToolchainPattern(b *testing.B) {
	const dirs, perDir = 20, 100
	files := make(map[string]string, dirs*perDir)
	for d := range dirs {
		for f := range perDir {
			files[fmt.Sprintf("src/d%d/sub/f%d.h", d, f)] = strings.Repeat("x", 200+37*f)
		}
	}
	_, c, root := rpctest.StartMounted(b, rpctest.Options{Files: files})
	dirHandles := make([][]byte, dirs)
	src := c.Lookup(root, "src")
	for d := range dirs {
		dirHandles[d] = c.Lookup(c.Lookup(src, fmt.Sprintf("d%d", d)), "sub")
	}
	b.ResetTimer()
	for i := range b.N {
		d, f := (i/perDir)%dirs, i%perDir
		fh := c.Lookup(dirHandles[d], fmt.Sprintf("f%d.h", f))
		c.Access(fh)
		if data, eof := c.Read(fh, 0, 64<<10); !eof || len(data) != 200+37*f {
			b.Fatalf("read %d bytes, eof %v", len(data), eof)
		}
	}
}
