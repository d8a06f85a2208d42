package nfs3

import (
	"fmt"
	"testing"

	billy "github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
)

// The cache holds at most maxOpenFiles files and evicts the least recently used: a file
// used between every new one stays open (opened once), and every evicted file is closed.
func TestOpenFilesEvictLeastRecentlyUsed(t *testing.T) {
	mem := memfs.New()
	opens := map[string]int{}
	var closed int
	c := newOpenFiles(func(p string, flag int) (billy.File, error) {
		opens[p]++
		f, err := mem.Create(p)
		return &countClose{File: f, closed: &closed}, err
	})
	defer c.closeAll()
	use := func(p string) {
		t.Helper()
		f, _, err := c.get(p, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.Release()
	}
	const extra = 50
	for i := range maxOpenFiles + extra {
		use("hot")
		use(fmt.Sprintf("f%d", i))
	}
	if opens["hot"] != 1 {
		t.Errorf("the file used all along was opened %d times", opens["hot"])
	}
	if n := len(c.entries); n != maxOpenFiles || c.recency.Len() != n {
		t.Errorf("%d files cached (%d in the recency list), want %d", n, c.recency.Len(), maxOpenFiles)
	}
	if closed != extra+1 {
		t.Errorf("%d files closed, want %d (evicted)", closed, extra+1)
	}
	use("f0") // long evicted: opened again
	if opens["f0"] != 2 {
		t.Errorf("an evicted file was not opened again (%d opens)", opens["f0"])
	}
}

type countClose struct {
	billy.File
	closed *int
}

func (c *countClose) Close() error { *c.closed++; return c.File.Close() }
