package nfs3_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// TestReaddirGoesOnWhenSnapshotIsGone: a client paging through a big merged directory in
// small pages whose snapshot leaves the cache between pages (other directories listed
// meanwhile, the union keeping two) goes on from its cookie and old verifier without
// BAD_COOKIE, while names are created and removed between pages and by another client at
// the same time: every name present throughout is listed exactly once, no name twice,
// cookies grow, and the verifier did change under it (the test went through the resume).
func TestReaddirGoesOnWhenSnapshotIsGone(t *testing.T) {
	files := map[string]string{}
	for i := range 1500 {
		files[fmt.Sprintf("big/l1-%04d", i)] = "x"
	}
	for i := range 4 {
		files[fmt.Sprintf("other%d/f", i)] = "x"
	}
	srv, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files, DirCacheEntries: 2})
	big := c.Lookup(root, "big")
	var others [][]byte
	for i := range 4 {
		o := c.Lookup(root, fmt.Sprintf("other%d", i))
		// An upper part, so that the directory is listed in the union's own cache (a
		// lower-only one is listed in the shared lowers' cache) and pushes big out of it.
		c.Create(o, "up")
		others = append(others, o)
	}
	for i := range 500 {
		c.Create(big, fmt.Sprintf("up-%04d", i))
	}

	removed := map[string]bool{} // by either run
	ever := map[string]bool{}    // every name the directory has held
	for _, plus := range []bool{false, true} {
		t.Run(fmt.Sprintf("plus=%v", plus), func(t *testing.T) {
			c, _ := srv.Mounted(t)
			// Names present throughout: the lower and upper names not removed below.
			throughout := map[string]bool{}
			for i := range 1500 {
				if n := fmt.Sprintf("l1-%04d", i); !removed[n] {
					throughout[n] = true
				}
			}
			for i := range 500 {
				throughout[fmt.Sprintf("up-%04d", i)] = true
			}
			for n := range throughout {
				ever[n] = true
			}

			// Another client creates and removes names all along.
			other, _ := srv.Mounted(t)
			var stop atomic.Bool
			var wg sync.WaitGroup
			var concErr atomic.Value
			var concMu sync.Mutex
			var concNames []string
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					name := fmt.Sprintf("conc-%v-%05d", plus, i)
					concMu.Lock()
					concNames = append(concNames, name)
					concMu.Unlock()
					for _, call := range []struct {
						proc nfs3.Proc
						args []byte
					}{
						{nfs3.ProcCreate, rpctest.CreateArgs(big, name, rpctest.CreateGuarded, rpctest.SattrMode(0o644))},
						{nfs3.ProcRemove, rpctest.DirOp(big, name)},
					} {
						if i%3 == 0 && call.proc == nfs3.ProcRemove {
							continue // some stay
						}
						reply, ok := <-other.Start(oncrpc.RPCVersion, nfs3.ProgramNumber, nfs3.Version, uint32(call.proc), call.args)
						if !ok {
							concErr.Store(fmt.Errorf("connection closed"))
							return
						}
						r := xdr.NewReader(reply, 0)
						r.Uint32()                              // xid
						r.Uint32()                              // reply
						r.Uint32()                              // accepted
						r.Uint32()                              // verifier flavor
						r.Opaque()                              // verifier body
						if r.Uint32() != 0 || r.Uint32() != 0 { // accept_stat, nfsstat3
							concErr.Store(fmt.Errorf("%s: procedure %d failed", name, call.proc))
							return
						}
					}
				}
			}()

			seen := map[string]int{}
			cookie, verf := uint64(0), uint64(0)
			resumed, pages := 0, 0
			for {
				pg := c.ReaddirPage(plus, big, cookie, verf, 512, 1024)
				pages++
				if pg.Status != nfs3.StatusOK {
					t.Fatalf("page %d (cookie %#x, verifier %#x): status %d", pages, cookie, verf, pg.Status)
				}
				for _, e := range pg.Entries {
					if e.Cookie <= cookie {
						t.Fatalf("page %d: cookie %#x of %s after %#x", pages, e.Cookie, e.Name, cookie)
					}
					cookie = e.Cookie
					seen[e.Name]++
				}
				if verf != 0 && pg.Verifier != verf {
					resumed++
				}
				verf = pg.Verifier
				if pg.EOF {
					break
				}
				if len(pg.Entries) == 0 {
					t.Fatalf("page %d: no entries and not the end", pages)
				}
				if pages%4 == 0 {
					// Changes between pages, then the snapshot leaves the cache.
					k := pages / 4
					gone := fmt.Sprintf("l1-%04d", (k*37+len(removed))%1500)
					if throughout[gone] {
						if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(big, gone)); st != nfs3.StatusOK {
							t.Fatalf("REMOVE %s: %d", gone, st)
						}
						delete(throughout, gone)
						removed[gone] = true
					}
					added := fmt.Sprintf("new-%v-%04d", plus, k)
					c.Create(big, added)
					ever[added] = true
					for _, o := range others {
						if pg := c.ReaddirPage(false, o, 0, 0, 0, 4096); pg.Status != nfs3.StatusOK {
							t.Fatalf("listing another directory: %d", pg.Status)
						}
					}
				}
			}
			stop.Store(true)
			wg.Wait()
			for _, n := range concNames {
				ever[n] = true
			}
			if err := concErr.Load(); err != nil {
				t.Fatalf("the other client: %v", err)
			}
			for n, k := range seen {
				if k > 1 {
					t.Errorf("%s listed %d times", n, k)
				}
				if !ever[n] && n != "." && n != ".." {
					t.Errorf("%s listed: never in the directory", n)
				}
			}
			missing := 0
			for n := range throughout {
				if seen[n] != 1 {
					missing++
					if missing < 10 {
						t.Errorf("%s, present throughout, not listed", n)
					}
				}
			}
			if seen["."] != 1 || seen[".."] != 1 {
				t.Errorf(". and .. listed %d and %d times", seen["."], seen[".."])
			}
			if resumed == 0 {
				t.Fatalf("%d pages, the verifier never changed: the snapshot never left the cache, nothing was tested", pages)
			}
			t.Logf("%d pages, %d went on in a newer listing, %d missing, %d names listed", pages, resumed, missing, len(seen))
		})
	}
}
