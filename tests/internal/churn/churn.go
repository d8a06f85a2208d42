// Package churn is the "other client" of the big-directory tests: over its own NFS
// connection (go-nfs-client) it keeps creating and removing entries in one directory, and
// removes a fixed set of the fixture's names (leaving whiteouts over lower entries), while
// a real client lists that directory.
package churn

import (
	"fmt"
	"path"
	"sync/atomic"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/ovlnfs/ovlnfs/internal/bigdir"
)

// Removable reports whether the churn may remove the fixture's i-th name: those names may
// be missing from a listing that overlaps the churn, every other fixture name must be there.
func Removable(i int) bool { return i%1000 == 500 }

// Name is the k-th name the churn creates; bigdir's names never look like it.
func Name(k int) string { return fmt.Sprintf("c%07d", k) }

// Counts is how many changes a run made, readable while it runs.
type Counts struct{ Created, Removed atomic.Int64 }

// Run connects to the server at addr (host:port, MOUNT and NFS on the one port) and churns
// bigdir.Dir until stop is closed: each round creates a new name, removes the one created
// eight rounds earlier, and every tenth round removes one Removable fixture name.
func Run(addr string, visible int, stop <-chan struct{}, counts *Counts) error {
	client, err := rpc.DialTCP("tcp", addr, false)
	if err != nil {
		return err
	}
	defer client.Close()
	// As root (AUTH_UNIX 0): a call without credentials is the anonymous user's, who may
	// not change the fixture's directory.
	target, err := (&nfsc.Mount{Client: client}).Mount("/", rpc.NewAuthUnix("churn", 0, 0).Auth())
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	next := 500 // the next Removable fixture name
	for k := 0; ; k++ {
		select {
		case <-stop:
			return nil
		default:
		}
		if _, err := target.Create(path.Join(bigdir.Dir, Name(k)), 0o644); err != nil {
			return fmt.Errorf("create %s: %w", Name(k), err)
		}
		counts.Created.Add(1)
		if k >= 8 {
			if err := target.Remove(path.Join(bigdir.Dir, Name(k-8))); err != nil {
				return fmt.Errorf("remove %s: %w", Name(k-8), err)
			}
			counts.Removed.Add(1)
		}
		if k%10 == 0 && next < visible {
			if err := target.Remove(path.Join(bigdir.Dir, bigdir.Name(next))); err != nil {
				return fmt.Errorf("remove %s: %w", bigdir.Name(next), err)
			}
			counts.Removed.Add(1)
			next += 1000
		}
		time.Sleep(5 * time.Millisecond) // leave the listing client most of the two cores
	}
}

// Check compares the names a client listed with the fixture and returns the problems
// found (at most a few of each kind). Without churn the listing must be exactly the visible
// names; with churn, every fixture name the churn leaves alone must still appear exactly
// once, a churn name at most once, and a whited-out name never.
func Check(listed []string, fx *bigdir.Layers, churned bool) []string {
	var problems []string
	report := func(kind string, names []string) {
		if len(names) == 0 {
			return
		}
		shown := names
		if len(shown) > 5 {
			shown = shown[:5]
		}
		problems = append(problems, fmt.Sprintf("%d %s, e.g. %q", len(names), kind, shown))
	}
	seen := make(map[string]int, len(listed))
	for _, n := range listed {
		seen[n]++
	}
	var dups, missing, hidden, unknown []string
	for n, c := range seen {
		if c > 1 {
			dups = append(dups, n)
		}
	}
	fixture := make(map[string]bool, len(fx.Visible))
	for i, n := range fx.Visible { // fx.Visible[i] == bigdir.Name(i): sorted, fixed width
		fixture[n] = true
		if seen[n] == 0 && !(churned && Removable(i)) {
			missing = append(missing, n)
		}
	}
	for _, n := range fx.Hidden {
		if seen[n] > 0 {
			hidden = append(hidden, n)
		}
	}
	for n := range seen {
		if !fixture[n] && !(churned && len(n) == 8 && n[0] == 'c') {
			unknown = append(unknown, n)
		}
	}
	report("names listed more than once", dups)
	report("names missing", missing)
	report("whited-out names listed", hidden)
	report("unexpected names listed", unknown)
	if !churned && len(listed) != len(fx.Visible) {
		problems = append(problems, fmt.Sprintf("%d names listed, want %d", len(listed), len(fx.Visible)))
	}
	return problems
}
