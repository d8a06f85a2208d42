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
	fds := map[string]int{}
	for _, d := range []string{l.Lower1, l.Lower2, l.Upper} {
		fd, err := unix.Open(filepath.Join(d, Dir), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
		fds[d] = fd
	}
	file := func(layer, name string) error {
		if err := unix.Mknodat(fds[layer], name, unix.S_IFREG|0o644, 0); err != nil {
			return fmt.Errorf("mknod %s/%s/%s: %w", layer, Dir, name, err)
		}
		return nil
	}
	layers := []string{l.Lower2, l.Lower1, l.Upper} // bottom up
	for i := 0; i < n; i++ {
		name := Name(i)
		own := i % 3
		if err := file(layers[own], name); err != nil {
			return nil, err
		}
		if i%10 == 0 && own < 2 { // also in a higher layer, which hides this one
			if err := file(layers[own+1], name); err != nil {
				return nil, err
			}
		}
		l.Visible = append(l.Visible, name)
	}
	for i := 0; i < n/10; i++ {
		name := fmt.Sprintf("w%07d", i)
		if err := file(layers[i%2], name); err != nil {
			return nil, err
		}
		if err := unix.Mknodat(fds[l.Upper], name, unix.S_IFCHR|0o000, 0); err != nil {
			return nil, fmt.Errorf("whiteout %s: %w", name, err)
		}
		l.Hidden = append(l.Hidden, name)
	}
	slices.Sort(l.Visible)
	return l, nil
}
