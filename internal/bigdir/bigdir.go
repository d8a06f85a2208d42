// Package bigdir writes the layer fixture of the big-directory tests and benchmark: one
// merged directory whose entries are spread over two lower layers and an upper, with
// names overridden by higher layers and names whited out in the upper, written with one
// mknod per entry so that 100,000 entries take about a second.
package bigdir

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Dir is the merged directory's path inside each layer.
const Dir = "big"

// Layers is a written fixture.
type Layers struct {
	Lower1, Lower2, Upper, Work string // Lower1 is the top-most lower
	// Visible is every name the merged directory shows, sorted.
	Visible []string
	// Hidden are names present in a lower layer and whited out in the upper.
	Hidden []string
}

// Name is the i-th visible name; churn names use another prefix so they never collide.
func Name(i int) string { return fmt.Sprintf("f%07d", i) }

// Write builds lower1, lower2, upper and work below root, with n visible entries in Dir:
// every third name lives only in each of the three layers, every tenth is also written
// in a layer above its own (overridden), and n/10 more lower names are whited out in the
// upper. It needs root (whiteouts are 0/0 character devices).
func Write(root string, n int) (*Layers, error) {
	l := &Layers{
		Lower1: filepath.Join(root, "lower1"), Lower2: filepath.Join(root, "lower2"),
		Upper: filepath.Join(root, "upper"), Work: filepath.Join(root, "work"),
	}
	for _, d := range []string{l.Lower1, l.Lower2, l.Upper} {
		if err := os.MkdirAll(filepath.Join(d, Dir), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(l.Work, 0o755); err != nil {
		return nil, err
	}
	// What each layer gets, decided first, then written one goroutine per layer: mknod in
	// three directories proceeds in parallel where it would queue in one.
	type node struct {
		name     string
		whiteout bool
	}
	plan := map[string][]node{}
	layers := []string{l.Lower2, l.Lower1, l.Upper} // bottom up
	for i := 0; i < n; i++ {
		name := Name(i)
		own := i % 3
		plan[layers[own]] = append(plan[layers[own]], node{name: name})
		if i%10 == 0 && own < 2 { // also in a higher layer, which hides this one
			plan[layers[own+1]] = append(plan[layers[own+1]], node{name: name})
		}
		l.Visible = append(l.Visible, name)
	}
	for i := 0; i < n/10; i++ {
		name := fmt.Sprintf("w%07d", i)
		plan[layers[i%2]] = append(plan[layers[i%2]], node{name: name})
		plan[l.Upper] = append(plan[l.Upper], node{name: name, whiteout: true})
		l.Hidden = append(l.Hidden, name)
	}
	errs := make(chan error, len(layers))
	for _, layer := range layers {
		go func() {
			fd, err := unix.Open(filepath.Join(layer, Dir), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(fd)
			for _, nd := range plan[layer] {
				mode := uint32(unix.S_IFREG | 0o644)
				if nd.whiteout {
					mode = unix.S_IFCHR // device 0/0: an overlay whiteout
				}
				if err := unix.Mknodat(fd, nd.name, mode, 0); err != nil {
					errs <- fmt.Errorf("mknod %s/%s/%s: %w", layer, Dir, nd.name, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range layers {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	slices.Sort(l.Visible)
	return l, nil
}
